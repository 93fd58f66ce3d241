"""What a competitor watches: progress bars on a terminal, each stage's output kept in a log, and
TensorBoard's curves when it is installed.

Bars (tqdm) are drawn only when stderr is a terminal: in CI, a log file, a captured test or
`make -j` into a pipe they stay quiet and the one-line summaries the stages print remain. Each
stage's printed output is also appended to runs/<name>/logs/<stage>.log (RunDir.log). With the
tensorboard package (pip install -e '.[tensorboard]'), each fold's epochs are also written as
event files, runs/<name>/tensorboard/fold<k>/ (tensorboard --logdir runs/<name>/tensorboard).
"""

from __future__ import annotations

import contextlib
import math
import shutil
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
    it runs; its error line too, when it fails with one, or its line when it is interrupted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {header}\n")
        out = sys.stdout
        sys.stdout = _Tee(out, log)
        try:
            yield
        except BaseException as e:
            from .errors import Interrupted, PipelineError

            if isinstance(e, PipelineError):
                log.write(f"error: {str(e).strip().splitlines()[-1]}\n")
            elif isinstance(e, Interrupted):
                log.write(f"interrupted: {e}\n")
            raise
        finally:
            sys.stdout = out


class Board:
    """A fold's TensorBoard event files, one point per epoch for each number of its history row
    (losses, accuracies, LRs, sizes, seconds); does nothing when tensorboard is not installed."""

    def __init__(self, folder: Path, first_epoch: int = 0):
        """first_epoch: where training starts; a fold trained from scratch drops the old files, a
        resumed one the points after its last finished epoch (TensorBoard's purge_step)."""
        try:
            from torch.utils.tensorboard import SummaryWriter  # raises ImportError without tensorboard
        except ImportError:
            self.writer = None
            return
        except Exception as e:  # a broken install (protobuf, ...) must not stop training
            print(f"note: TensorBoard not written ({type(e).__name__}: {e})")
            self.writer = None
            return
        if first_epoch == 0:
            shutil.rmtree(folder, ignore_errors=True)
        self.writer = SummaryWriter(str(folder), purge_step=first_epoch or None)

    @staticmethod
    def tag(key: str) -> str:
        metric = key.startswith(("valid_", "ema_valid_")) and not key.endswith("_s")  # a number's valid_rmse, ...
        groups = (("loss", "loss" in key), ("accuracy", "accuracy" in key), ("lr", key.startswith("lr_")))
        for group, test in (*groups, ("metric", metric)):
            if test:
                return f"{group}/{key}"
        return f"seconds/{key}" if key.endswith("_s") or key == "seconds" else f"run/{key}"

    def epoch(self, row: dict) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if key != "epoch" and number and math.isfinite(value):
                self.writer.add_scalar(self.tag(key), value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
