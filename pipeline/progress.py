"""What a competitor watches: progress bars on a terminal, and each stage's output kept in a log.

Bars (tqdm) are drawn only when stderr is a terminal: in CI, a log file, a captured test or
`make -j` into a pipe they stay quiet and the one-line summaries the stages print remain. Each
stage's printed output is also appended to runs/<name>/logs/<stage>.log (RunDir.log).
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from tqdm import tqdm


def on_terminal() -> bool:
    """A progress bar only for a person watching: never in a log file, CI or a captured test."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def bar(iterable, total: int | None = None, desc: str = "", unit: str = "batch", **kw):
    """tqdm over `iterable` on a terminal, removed when done (the summary line stays); else the
    iterable itself, untouched."""
    if not on_terminal():
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, **kw)


def show(b, **values) -> None:
    """Live values at the end of a bar (loss, lr); nothing when there is no bar."""
    if isinstance(b, tqdm):
        b.set_postfix(values)


class _Tee:
    """A stream that also appends what is written to a file (flushed line by line)."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.log.write(text)
        if "\n" in text:
            self.log.flush()
        return self.stream.write(text)

    def flush(self) -> None:
        self.log.flush()
        self.stream.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding: the terminal's
        return getattr(self.stream, name)


@contextlib.contextmanager
def logged(path: Path, header: str):
    """Append this stage's stdout to `path` (with a header line naming the command and time) while
    it runs; its error line too, when it fails with one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {header}\n")
        out = sys.stdout
        sys.stdout = _Tee(out, log)
        try:
            yield
        except Exception as e:
            from .errors import PipelineError

            if isinstance(e, PipelineError):
                log.write(f"error: {str(e).strip().splitlines()[-1]}\n")
            raise
        finally:
            sys.stdout = out
