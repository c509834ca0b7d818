"""The multi-node path on one machine: a real Ray cluster of two nodes on 127.0.0.1, a search through
``--address``, a worker node killed mid-search, and a killed driver resumed across the nodes."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage

from results.parquet import ResultsError, read_results, read_trials
from p2m.names import JOURNAL_FILE
from search.optuna_adapter import STUDY_NAME

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow, pytest.mark.system]  # a two-node cluster
HELPER = Path(__file__).with_name("cluster_helper.py")
MAX_T = 4


@pytest.fixture
def cluster(ray_env):
    """A head and a worker node (1 CPU each) on 127.0.0.1; yields (info, send) where send writes a command."""
    env = {**ray_env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    proc = subprocess.Popen([sys.executable, str(HELPER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    info = json.loads(proc.stdout.readline())

    def send(command: str) -> str:
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        return proc.stdout.readline().strip()

    try:
        yield info, send, env
    finally:
        try:
            proc.stdin.write("stop\n")
            proc.stdin.close()
            proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()


def _config(search_yaml, tmp_path, synth_dir, max_failures):
    return search_yaml(tmp_path / "s.yaml", synth_dir, tmp_path / "exp",
                       search={"num_samples": 4, "max_concurrent": 2, "seed": 0},
                       baselines={"published": {}},
                       scheduler={"type": "fifo", "max_t": MAX_T, "grace_period": 1, "reduction_factor": 2},
                       failure={"max_failures": max_failures})


def _launch(cfg, address, env):
    return subprocess.Popen([sys.executable, "-m", "p2m.cli", "search", "launch", "--config", str(cfg), "--address",
                             address, "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)


def _wait_rows(exp, until, driver, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if driver.poll() is not None:
            raise AssertionError(f"the search ended (rc {driver.returncode}) early:\n{driver.stdout.read()[-4000:]}")
        try:
            rows = read_results(exp)
            if until(rows):
                return rows
        except (ResultsError, KeyError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"no rows satisfying the condition in {exp} after {timeout} s")


def _check_complete(exp, trials_expected):
    rows, trials = read_results(exp), read_trials(exp)
    assert len(trials) == trials_expected
    assert (trials["status"] == "TERMINATED").all() and (trials["stop_reason"] == "completed").all()
    assert not read_results(exp, dedupe=True).duplicated(["trial_id", "training_iteration"]).any()
    for _, group in rows.groupby("trial_id"):
        assert sorted(group["training_iteration"]) == list(range(1, MAX_T + 1))
    assert len(rows) == trials_expected * MAX_T
    assert set(rows["node_ip"]) == {"127.0.0.1"}
    study = optuna.load_study(study_name=STUDY_NAME,
                              storage=JournalStorage(JournalFileBackend(str(exp / JOURNAL_FILE))))
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE"] * trials_expected
    return rows, trials


def test_worker_node_lost_mid_search(cluster, synth_dir, tmp_path, search_yaml):
    info, send, env = cluster
    cfg = _config(search_yaml, tmp_path, synth_dir, max_failures=2)
    exp = tmp_path / "exp" / "t"
    driver = _launch(cfg, info["address"], env)
    try:
        # a trial reports from the worker node: kill that node while its trial is still running
        _wait_rows(exp, lambda r: "node_id" in r and (r["node_id"] == info["worker"]).any(), driver)
        killed_at = time.time()
        assert send("kill-worker") == "killed"
        out, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, out[-4000:]
    rows, trials = _check_complete(exp, 4)
    # both nodes ran trials; after the kill only the head did, and the lost trial(s) restarted
    assert {info["head"], info["worker"]} <= set(rows["node_id"])
    assert set(rows.loc[rows["written_at"] > killed_at + 5, "node_id"]) == {info["head"]}
    assert trials["num_failures"].sum() >= 1


def test_driver_killed_then_resumed_on_the_cluster(cluster, synth_dir, tmp_path, search_yaml, p2m_run):
    info, _, env = cluster
    cfg = _config(search_yaml, tmp_path, synth_dir, max_failures=1)
    exp = tmp_path / "exp" / "t"
    driver = _launch(cfg, info["address"], env)
    try:
        _wait_rows(exp, lambda r: len(r) >= 3 and _snapshot_checkpoints(exp), driver)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and everything it started
        driver.wait(timeout=60)
    # what a driver killed between deleting a trial's old checkpoint and uploading the snapshot that no longer
    # lists it leaves (Ray deletes first): the snapshot's latest checkpoint of a running trial is gone
    lost_trial, lost = sorted(_snapshot_checkpoints(exp).items())[0]
    shutil.rmtree(lost)
    result = p2m_run("search", "resume", exp, "--address", info["address"], "--quiet", env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    rows, trials = _check_complete(exp, 4)
    assert {info["head"], info["worker"]} <= set(rows["node_id"])
    assert f"{lost_trial}: its latest checkpoint" in output and "restarts from its first epoch" in output, output[-3000:]
    assert trials.loc[trials["trial_id"] == lost_trial, "num_failures"].tolist() == [0]  # no failed restore


def _snapshot_checkpoints(exp: Path) -> dict[str, str]:
    """Ray's newest experiment snapshot in ``exp``: {trial id: the path of its latest checkpoint} for each
    unfinished trial that has one (read as Ray's resume reads it; {} while the snapshot is being written)."""
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint
    from ray.tune.experiment.trial import Trial
    from ray.tune.utils.serialization import _loads_with_cloudpickle

    try:
        path = _find_newest_experiment_checkpoint(str(exp))
        state = _loads_with_cloudpickle(Path(path).read_text()) if path else {"trial_data": []}
    except (OSError, ValueError):
        return {}
    found = {}
    for json_state, run_metadata in state["trial_data"]:
        trial = Trial.from_json_state(json_state, stub=True)
        trial.restore_run_metadata(run_metadata)
        result = trial.latest_checkpoint_result
        if not trial.is_finished() and result is not None and Path(result.checkpoint.path).is_dir():
            found[trial.trial_id] = result.checkpoint.path
    return found
