"""Who is writing an experiment folder: one holder file per running stage process, so two runs of
one experiment with different settings cannot mix their outputs, and a stage that outlives the
`make` that started it cannot race the next one.

    runs/<name>/locks/<host>-<pid>.json    {"pid", "host", "stage", "fold", "digest", "since"}

A stage takes the lock before it writes its stamp (pipeline/__main__.py) and drops it when it
ends, however it ends (a kill -9 leaves the file: the next run on this host sees the pid is dead
and takes it over). The same stage may run beside itself only with the same settings (the stage
stamp's digest) on another fold: `make -j 2 train` runs folds side by side. Different stages may
run side by side unless one reads what the other writes (infer reads train's checkpoints, mine
and pseudo read infer's predictions). A holder on another host cannot be checked; its file is
named so the user can delete it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from .errors import PipelineError


def holder_path(run_dir: Path) -> Path:
    return Path(run_dir) / "locks" / f"{socket.gethostname()}-{os.getpid()}.json"


def alive(holder: dict) -> bool:
    """Whether a holder's process still runs (unknowable for another host's: taken as alive)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, KeyError, TypeError):
        return True  # another user's process, or a file we cannot read: do not take it over
    return True


# Stages whose outputs another reads: neither may run while the other does.
READS = {"infer": {"train"}, "mine": {"train", "infer"}, "pseudo": {"train", "infer"}}


def conflict(mine: dict, other: dict) -> str | None:
    """Why `other` forbids `mine` to start, or None."""
    a, b = mine["stage"], other["stage"]
    if a != b:
        return f"is running {b}" if b in READS.get(a, ()) or a in READS.get(b, ()) else None
    if other.get("digest") != mine.get("digest"):
        return f"is running {other['stage']} with other settings"
    if other.get("fold") is None or mine.get("fold") is None or other["fold"] == mine["fold"]:
        fold = "" if other.get("fold") is None else f" fold {other['fold']}"
        return f"is running {other['stage']}{fold}"
    return None


def _holders(locks: Path) -> list[tuple[Path, dict]]:
    out = []
    for f in sorted(locks.glob("*.json")):
        try:
            out.append((f, json.loads(f.read_text())))
        except (OSError, ValueError):
            continue  # written half by a process killed mid-write: no holder worth keeping
    return out


def running(run_dir: Path) -> list[dict]:
    """The stage processes holding the experiment's lock that still run (another host's: all)."""
    return [h for _, h in _holders(Path(run_dir) / "locks") if alive(h)]


def acquire(run_dir: Path, stage: str, fold: int | None, digest: str) -> Path:
    """Register this process as a holder, refusing (one line, naming the holder and its file) when
    a live holder conflicts; stale holders of dead processes on this host are removed."""
    locks = Path(run_dir) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "stage": stage, "fold": fold, "digest": digest}
    with open(locks / ".guard", "a") as guard:  # noqa: SIM115 (held for the check-and-write)
        fcntl.flock(guard, fcntl.LOCK_EX)  # two starters at once: one checks and writes, then the other
        for f, other in _holders(locks):
            if f == holder_path(run_dir):
                continue
            if not alive(other):
                f.unlink(missing_ok=True)
                print(f"{f}: stale lock of a process that is gone (pid {other.get('pid')}); taken over")
                continue
            why = conflict(mine, other)
            if why:
                raise PipelineError(
                    f"{run_dir}: locked: pid {other['pid']} on {other['host']} {why} "
                    f"(since {other.get('since', '?')}); wait for it, or stop it, or delete {f} if it is gone"
                )
        path = holder_path(run_dir)
        path.write_text(json.dumps({**mine, "since": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
    return path


@contextlib.contextmanager
def held(run_dir: Path, stage: str, fold: int | None, digest: str):
    """The lock for the body of a stage; released on any exit, SIGTERM and SIGHUP included."""
    path = acquire(run_dir, stage, fold, digest)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def die_with_parent() -> None:
    """Under Make, end this process when Make dies (Linux's parent-death signal), and turn SIGTERM
    and SIGHUP into SystemExit so the lock and any temp file are cleaned up on the way out.
    A stage started by hand keeps running when its shell closes (nohup works as usual)."""
    global _OWNER
    _OWNER = os.getpid()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _exit_on)
    if "MAKELEVEL" not in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # Make died before the signal was asked for
        raise SystemExit(143)


_OWNER: int | None = None  # the stage's own process: forked DataLoader workers inherit the handler


def _exit_on(signum, _frame) -> None:
    if os.getpid() != _OWNER:  # a worker told to stop by its loader dies as it always did, quietly
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise SystemExit(128 + signum)
