"""The trainable's housekeeping: scratch directories of killed trial processes do not pile up."""
import os
import subprocess
import sys

from search.trainable import WORKDIR_PREFIX, remove_stale_workdirs


def test_scratch_directories_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has exited
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        paths = {name: tmp_path / f"{WORKDIR_PREFIX}{name}" for name in
                 (f"{dead_pid}-abc", f"{live.pid}-def", f"{os.getpid()}-ghi", "xyz")}  # "xyz": an old-style name
        for path in paths.values():
            (path / "run").mkdir(parents=True)
            (path / "run" / "checkpoint.pt").write_bytes(b"x" * 100)
        (tmp_path / "unrelated").mkdir()
        assert remove_stale_workdirs(tmp_path) == [paths[f"{dead_pid}-abc"]]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [f"{WORKDIR_PREFIX}{live.pid}-def", f"{WORKDIR_PREFIX}{os.getpid()}-ghi", f"{WORKDIR_PREFIX}xyz", "unrelated"])
    finally:
        live.kill()
        live.wait()
