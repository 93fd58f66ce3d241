"""The CPU cores shared by the pipeline processes running on one machine at once.

Each stage process registers in runtime.cache_dir/processes/ (a file named by its pid, holding its
start time, so a reused pid is not taken for it) and sizes torch's thread pool to its share of the
cores: the cores over the processes registered there that are running now. A stopped one (Ctrl-Z,
SIGSTOP) is not counted until it runs again; torchrun's processes on this machine register like
any other. A process looks again every few seconds while it trains, so the first of two runs gives
up half its threads when the second starts, and takes them back when it ends. Files of processes
that died without unregistering (SIGKILL) are removed by the next process that looks. Runs with
another cache_dir do not see each other. Where the registry cannot be written (a read-only cache
dir), the share is what `make -j N` (PIPELINE_JOBS) and torchrun on this machine
(LOCAL_WORLD_SIZE) imply.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from pathlib import Path

FOLDER = "processes"
RECHECK_S = 5.0  # how often a running process recounts the others


def cores() -> int:
    """The cores this process may use: what a cluster launcher granted (SLURM_CPUS_PER_TASK),
    else its CPU affinity."""
    if os.environ.get("SLURM_CPUS_PER_TASK"):
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process as the kernel gives them (/proc/<pid>/stat: T is stopped),
    or None when it is gone; where there is no /proc, ("R", "alive") when the pid exists."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], fields[19]  # fields 3 and 22, after the command's parentheses
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
            return "R", "alive"
        except OSError:
            return None


def started(pid: int) -> str | None:
    """A process's start time as the kernel counts it, or None when it is gone."""
    stat = proc_stat(pid)
    return None if stat is None else stat[1]


def live(folder: Path, running: bool = False) -> list[int]:
    """The pids registered in `folder` whose processes still exist (running: and are not stopped);
    the files of the gone ones removed."""
    pids = []
    for f in Path(folder).glob("*.json"):
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue  # being written, or removed, this moment
        stat = proc_stat(doc["pid"])
        if stat is None or stat[1] != doc["start"]:
            f.unlink(missing_ok=True)
        elif not (running and stat[0] in "Tt"):
            pids.append(doc["pid"])
    return sorted(pids)


class Share:
    """This process's entry in the registry and the thread count it sets."""

    def __init__(self, cache_dir: str | Path):
        self.folder = Path(cache_dir) / FOLDER
        self.me = self.folder / f"{os.getpid()}.json"
        self.checked, self.threads = 0.0, 0
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.me.with_suffix(".tmp")
            tmp.write_text(json.dumps({"pid": os.getpid(), "start": started(os.getpid())}))
            tmp.replace(self.me)
        except OSError:  # a read-only cache dir: share by PIPELINE_JOBS alone
            self.me = None
        atexit.register(self.leave)

    def leave(self) -> None:
        if self.me is not None and self.me.stem == str(os.getpid()):  # not a forked worker's exit
            self.me.unlink(missing_ok=True)

    def sharers(self) -> int:
        """The processes sharing the cores: those registered and running (this one always among
        them); without a registry, what Make and torchrun on this machine say. Not `make -j`'s
        slots as a floor: `make -j8 infer` runs one process, which would keep an eighth of the
        cores to its end. Jobs started together may count each other only at the next recount
        (RECHECK_S), a few seconds of too many threads."""
        if self.me is None:
            return int(os.environ.get("PIPELINE_JOBS", "1")) * int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        return max(1, len(live(self.folder, running=True)))

    def threads_now(self) -> int:
        return max(1, cores() // self.sharers())


_SHARE: Share | None = None


def share_cores(cache_dir: str | Path) -> int:
    """Register this process (once) and size torch's threads to its share; the thread count."""
    global _SHARE
    if _SHARE is None or _SHARE.folder != Path(cache_dir) / FOLDER:
        _SHARE = Share(cache_dir)
    _SHARE.checked = 0.0
    return rebalance()


def rebalance() -> int:
    """Recount the processes sharing the cores (at most every RECHECK_S) and set torch's threads
    to this process's share; cheap enough to call every training step. The thread count."""
    import torch

    if _SHARE is None:
        return torch.get_num_threads()
    now = time.monotonic()
    if now - _SHARE.checked >= RECHECK_S:
        _SHARE.checked = now
        threads = _SHARE.threads_now()
        if threads != _SHARE.threads:
            torch.set_num_threads(threads)
            _SHARE.threads = threads
    return _SHARE.threads
