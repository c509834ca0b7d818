"""Shared fixtures: the real ShapeNet-P2M sample, a small synthetic dataset, Ray for search and job tests
(a private local instance on 127.0.0.1 with its own temp dir, cleaned up after), and an S3-protocol server on
127.0.0.1 (moto's server mode) for experiments on object storage."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLE_DIR = REPO.parent / "shared" / "fixtures" / "shapenet_p2m_sample"


@pytest.fixture(scope="session", autouse=True)
def restore_key_home(tmp_path_factory) -> Path:
    """The tests' restore keys (search.trust) live in a config directory of their own, never in the user's: every
    command the tests run, in this process or a subprocess, makes and reads its key there."""
    home = tmp_path_factory.mktemp("xdg-config")
    previous = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(home)
    os.environ.pop("P2M_RESTORE_KEY", None)
    yield home
    if previous is None:
        os.environ.pop("XDG_CONFIG_HOME", None)
    else:
        os.environ["XDG_CONFIG_HOME"] = previous


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real sample (5 airplanes x 5 views); P2M_SAMPLE_DIR overrides where it lies."""
    path = Path(os.environ.get("P2M_SAMPLE_DIR", DEFAULT_SAMPLE_DIR))
    if not (path / "02691156").is_dir():
        pytest.skip(f"real ShapeNet-P2M sample not found at {path} (set P2M_SAMPLE_DIR)")
    return path


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """3 models x 2 views of every synthetic category, original layout with split lists."""
    from p2m.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth") / "data"
    generate(SynthConfig(out=str(out), models_per_category=3, views=2, seed=7, workers=2), progress=False)
    return out


@pytest.fixture
def ray_env():
    """Environment for a search subprocess: Ray's files under a private short temp dir, nothing off loopback."""
    yield from _ray_env()


@pytest.fixture(scope="module")
def module_ray_env():
    """:func:`ray_env` for a module's fixtures (one experiment several tests read)."""
    yield from _ray_env()


def _ray_env():
    tmp = Path(tempfile.mkdtemp(prefix="p2mray", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_TMPDIR": str(tmp), "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0",
           "PYTHONUNBUFFERED": "1"}
    yield env
    _kill_leftovers(str(tmp))
    shutil.rmtree(tmp, ignore_errors=True)


def _kill_leftovers(marker: str) -> None:
    """Kill processes whose command line names this test's Ray temp dir (raylet, GCS, workers)."""
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        try:
            cmd = (pid_dir / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            try:
                os.kill(int(pid_dir.name), signal.SIGKILL)
            except OSError:
                pass


S3_BUCKET = "p2m-test"  # the bucket of the s3_env server


@pytest.fixture(scope="session")
def s3_env():
    """A moto S3 server on a free loopback port with one bucket; the environment that points pyarrow (and Ray,
    which uses pyarrow) at it. The server and everything in it go when the session ends."""
    boto3 = pytest.importorskip("boto3")  # moto's own dependency: present wherever moto[server] is
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "moto's S3 server did not start"
                time.sleep(0.2)
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                     aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=S3_BUCKET)
        yield env
    finally:
        server.kill()
        server.wait()


@pytest.fixture
def s3(s3_env, monkeypatch):
    """s3_env's variables set in this process too (for the tests' own reads of the bucket)."""
    from results import storage

    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    storage._remote_fs.cache_clear()  # a client made before the variables were set would not see the server
    yield s3_env
    storage._remote_fs.cache_clear()


@pytest.fixture
def s3_bucket() -> str:
    return S3_BUCKET


@pytest.fixture(scope="session")
def search_yaml():
    return write_search_config


@pytest.fixture
def p2m_run():
    return p2m_cli


@pytest.fixture
def kill_search_midway():
    return launch_and_kill


@pytest.fixture(scope="session")
def fake_controller():
    return FakeController


@pytest.fixture(scope="session")
def check_retention():
    return retained_as_the_rule_says


def retained_as_the_rule_says(exp, trials, keep_best: int = 3) -> set:
    """Assert what search.retention leaves in a finished experiment (a local path or a bucket URI), from its trials
    table: the baselines and the ``keep_best`` best ended trials (those that completed first, by their last value,
    then those stopped early) hold one checkpoint each, every other ended trial none (errored ones are not
    looked at); returns the ids of the trials that keep one."""
    import pandas as pd

    from results import storage
    from results.schema import BASELINE, LAST_OBJECTIVE, STOP_COMPLETED, STOP_EARLY, STOP_ERRORED, STOP_REASON, \
        TRIAL_ID

    ended = trials[trials[STOP_REASON] != STOP_ERRORED]
    order = pd.concat([ended[ended[STOP_REASON] == STOP_COMPLETED].sort_values(LAST_OBJECTIVE),
                       ended[ended[STOP_REASON] == STOP_EARLY].sort_values(LAST_OBJECTIVE)])
    kept = set(order[TRIAL_ID].head(keep_best)) | set(ended.loc[ended[BASELINE].notna(), TRIAL_ID])
    names = storage.subdirs(exp)
    for trial_id in ended[TRIAL_ID]:
        [name] = [n for n in names if n.startswith("train_trial_") and trial_id in n]
        left = [n for n in storage.subdirs(storage.join(exp, name)) if n.startswith("checkpoint_")]
        assert len(left) == (trial_id in kept), (trial_id, left)
    return kept


def launch_and_kill(cfg: Path, exp: Path, env: dict, rows: int, until=None) -> None:
    """Launch the search of ``cfg`` and SIGKILL its driver (and the Ray processes it started) once the experiment
    ``exp`` holds ``rows`` result rows and ``until()`` (when given) is true; fails when the search ends first."""
    from results.parquet import ResultsError, read_results

    driver = subprocess.Popen([sys.executable, "-m", "p2m.cli", "search", "launch", "--config", str(cfg), "--quiet"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, seen, ready = time.time() + 300, 0, False
    while time.time() < deadline and not ready and driver.poll() is None:
        time.sleep(0.5)
        try:
            seen = len(read_results(exp, dedupe=False))
        except ResultsError:
            seen = 0
        ready = seen >= rows and (until is None or until())
    assert driver.poll() is None, f"the search ended (status {driver.poll()}) before it could be killed"
    assert ready, f"{seen} rows after 300 s, and until() {'not ' if until else ''}true"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    time.sleep(2)


def write_search_config(path: Path, data_root: Path, storage: Path, **sections) -> Path:
    cfg = {
        "name": "t",
        # the tiny profile with a ResNet-18 cut after its second stage: checkpoints of about 12 MB instead of
        # 182 MB (the searches here test orchestration, and every epoch of every trial writes and persists one)
        "base": {"profile": "tiny", "data": {"root": str(data_root), "val_limit": 4},
                 "model": {"feature_levels": [1, 2]}, "optim": {"steps_per_epoch": 2}},
        "search": {"num_samples": 6, "max_concurrent": 2, "seed": 0},
        "baselines": {"published": {}, "uniform": {"loss.w1_laplacian": 0.5}},
        "scheduler": {"type": "asha", "max_t": 3, "grace_period": 1, "reduction_factor": 2},
        "resources": {"cpu": 1, "gpu": 0},
        "failure": {"max_failures": 0},
        "storage": {"path": str(storage)},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


def p2m_cli(*args, env, timeout=600, **kwargs):
    return subprocess.run([sys.executable, "-m", "p2m.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)


class FakeController:
    """The part of Ray's TuneController a scheduler calls, without Ray: its trials (all, and those not ended), a
    save (recorded, and returned as the checkpoint the scheduler holds) and a pause (recorded)."""

    search_alg = None

    def __init__(self, trials):
        self.trials, self.saves, self.paused = trials, [], []

    def get_trials(self):
        return self.trials

    def get_live_trials(self):
        return [t for t in self.trials if t.status != "TERMINATED"]  # Ray's Trial.TERMINATED

    def _schedule_trial_save(self, trial, result=None):
        from results.schema import ITERATION

        self.saves.append((trial.trial_id, result[ITERATION]))
        return f"{trial.trial_id}@{result[ITERATION]}"

    def pause_trial(self, trial, should_checkpoint=True):
        self.paused.append(trial.trial_id)
