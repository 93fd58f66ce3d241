"""pipeline/cores.py: pipeline processes on one machine share its cores, counted in a registry
that forgets the processes that died."""

import json
import os
import signal
import subprocess
import sys
import time

import torch

from pipeline import cores


def _register(folder, pid, start):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{pid}.json").write_text(json.dumps({"pid": pid, "start": start}))


def test_each_live_process_takes_its_share_and_a_dead_one_is_forgotten(tmp_path, monkeypatch):
    monkeypatch.setattr(cores, "cores", lambda: 8)
    monkeypatch.delenv("PIPELINE_JOBS", raising=False)
    threads = torch.get_num_threads()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert cores.share_cores(tmp_path) == 8 and torch.get_num_threads() == 8  # alone: every core
        folder = tmp_path / cores.FOLDER
        assert json.loads((folder / f"{os.getpid()}.json").read_text())["pid"] == os.getpid()
        _register(folder, other.pid, cores.started(other.pid))
        _register(folder, other.pid + 1_000_000, "1")  # no such process: its file goes
        cores._SHARE.checked = 0.0  # as if RECHECK_S had passed
        assert cores.rebalance() == 4 and torch.get_num_threads() == 4
        assert not (folder / f"{other.pid + 1_000_000}.json").exists()
        _register(folder, os.getppid(), "not its start")  # a reused pid is not the registered process
        other.kill()
        other.wait()
        cores._SHARE.checked = 0.0
        assert cores.rebalance() == 8 and cores.live(folder) == [os.getpid()]
        cores._SHARE.leave()
        assert not (folder / f"{os.getpid()}.json").exists()
    finally:
        other.kill()
        cores._SHARE = None
        torch.set_num_threads(threads)


def test_the_share_counts_the_processes_that_run_not_make_js_slots(tmp_path, monkeypatch):
    monkeypatch.setattr(cores, "cores", lambda: 8)
    monkeypatch.setenv("PIPELINE_JOBS", "8")  # make -j8 train FOLD=3: one process runs
    monkeypatch.setenv("WORLD_SIZE", "16")  # torchrun over several nodes: the others are elsewhere
    assert cores.Share(tmp_path).threads_now() == 8
    read_only = cores.Share(tmp_path)
    read_only.me = None  # no registry: what Make and torchrun on this machine imply
    monkeypatch.setenv("PIPELINE_JOBS", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert read_only.threads_now() == 2


def test_a_stopped_process_is_counted_only_while_it_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(cores, "cores", lambda: 8)
    share = cores.Share(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _register(share.folder, other.pid, cores.started(other.pid))
        assert share.threads_now() == 4
        other.send_signal(signal.SIGSTOP)  # Ctrl-Z
        for _ in range(100):
            if cores.proc_stat(other.pid)[0] in "Tt":
                break
            time.sleep(0.05)
        assert share.threads_now() == 8 and other.pid in cores.live(share.folder)  # kept, not counted
        other.send_signal(signal.SIGCONT)
        for _ in range(100):
            if cores.proc_stat(other.pid)[0] not in "Tt":
                break
            time.sleep(0.05)
        assert share.threads_now() == 4
    finally:
        other.kill()
        other.wait()


def test_a_process_that_exits_leaves_the_registry(tmp_path):
    folder = tmp_path / cores.FOLDER
    code = f"from pipeline import cores; cores.share_cores({str(tmp_path)!r}); print(cores.live({str(folder)!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert len(json.loads(out)) == 1 and not list(folder.glob("*.json"))
