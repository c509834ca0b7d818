"""Guarding an experiment (issue 28): names inside the storage path, restore only of signed state, one driver at a
time, no experiment stuck by an early death, and exit codes that say how a search ended."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from p2m.cli import main
from p2m.names import RUNS_DIR, SETTINGS_FILE
from results import storage
from results.lease import LEASE_FILE
from results.schema import STOP_REASON, STOP_UNFINISHED, TRIAL_ID
from results.parquet import read_trials
from search.outcome import Outcome, outcome_of
from search.trust import (KEPT_VERSIONS, SIGNATURES, TUNER_FILE, SignState, UntrustedState, restore_key,
                          sign_files, verify)

ESCAPES = ["../../escape", "..", "/", "/etc/cron.d", ".hidden", "a/b", "", "x\\y", "name with space"]


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("p2m: error:"), err
    return lines[0]


@pytest.mark.parametrize("name", ESCAPES)
def test_an_experiment_name_is_one_component_under_the_storage_path(name, tmp_path, synth_dir, capsys):
    store = tmp_path / "deep" / "store"
    code = main(["search", "launch", "--name", name, "--storage-path", str(store), "--data", str(synth_dir)])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and "name" in line and repr(name) in line
    assert not (tmp_path / "escape").exists() and not (tmp_path / "deep" / "escape").exists()
    assert not store.exists()  # refused before anything was written


def test_a_config_name_and_a_storage_join_are_checked_too(tmp_path, synth_dir, search_yaml, capsys):
    cfg = search_yaml(tmp_path / "s.yaml", synth_dir, tmp_path / "store", name="../escape")
    assert main(["search", "launch", "--config", str(cfg)]) == 2
    assert f"{cfg}: name '../escape'" in _one_error_line(capsys.readouterr().err)
    for good in ("p2m-4242", "demo", "a.b_c-1", "Z9"):
        assert storage.experiment(tmp_path, good) == tmp_path.resolve() / good
    for bad in ESCAPES:
        with pytest.raises(ValueError, match="letters, digits"):
            storage.experiment(tmp_path, bad)


def test_resume_of_a_file_and_max_t_zero_are_one_line(tmp_path, synth_dir, search_yaml, capsys):
    cfg = search_yaml(tmp_path / "s.yaml", synth_dir, tmp_path / "store", scheduler={"max_t": 0, "grace_period": 1})
    assert main(["search", "resume", str(cfg)]) == 2
    assert "not an experiment directory (a file)" in _one_error_line(capsys.readouterr().err)
    assert main(["search", "launch", "--config", str(cfg)]) == 2
    assert f"{cfg}: scheduler.max_t must be >= 1, got 0" in _one_error_line(capsys.readouterr().err)


def test_outcome_exit_codes_from_the_trials_table(tmp_path):
    """Hand-made trials tables: the exit code and the line each ending gets."""
    from results.parquet import write_trials

    def outcome(statuses, errors=None, stopped_by=None):
        exp = tmp_path / f"e{len(list(tmp_path.iterdir()))}"
        exp.mkdir()
        write_trials(exp, pd.DataFrame({TRIAL_ID: [f"t{i}" for i in range(len(statuses))], "status": statuses,
                                        "error": errors or [None] * len(statuses)}))
        return outcome_of(exp, stopped_by)

    assert outcome(["TERMINATED"] * 3).exit_code(0) == 0
    some = outcome(["TERMINATED", "ERROR", "TERMINATED"], [None, "ValueError: boom", None])
    assert (some.exit_code(0), some.exit_code(1)) == (1, 0)
    assert "1 of 3 trials errored (failure.max_failures 0); the first: ValueError: boom" in some.summary(0, "x")
    assert outcome(["ERROR", "ERROR"], ["A", "B"]).exit_code(5) == 1  # all errored, whatever max_failures
    nan = "p2m.train.NonFiniteLossError: loss became nan at epoch 1 step 2"
    diverged = outcome(["TERMINATED", "ERROR", "ERROR"], [None, nan, "OSError: disk"])
    assert (diverged.exit_code(0), diverged.exit_code(1)) == (1, 0)  # a diverged trial is a finding, not a failure
    assert "2 of 3 trials errored, 1 of them a loss that diverged (failure.max_failures 0); the first: OSError" in \
        diverged.summary(0, "x")
    assert outcome(["ERROR", "ERROR"], [nan, nan]).exit_code(0) == 1  # every trial diverged: nothing was found
    interrupted = outcome(["TERMINATED", "RUNNING", "PENDING"])
    assert interrupted.exit_code(0) == 130 and "2 of 3 trials unfinished; continue with: x" in interrupted.summary(0, "x")
    assert outcome(["TERMINATED", "PAUSED"], stopped_by=signal.SIGTERM).exit_code(0) == 143
    assert outcome_of(tmp_path / "none").exit_code(0) == 0 and Outcome("x").trials == 0


# -- one real experiment: the stuck window first, then signed state, planted pickles, a second driver ---------------

@pytest.fixture(scope="module")
def signed_experiment(tmp_path_factory, synth_dir, module_ray_env, search_yaml):
    """A search launched after an earlier launch of the same name died before Ray's first snapshot (a study
    database that cannot be opened: the issue's case); returns (experiment, env, the two launches' outputs)."""
    tmp = tmp_path_factory.mktemp("guard")
    store = tmp / "store"
    good = search_yaml(tmp / "good.yaml", synth_dir, store, search={"num_samples": 2, "max_concurrent": 2},
                       baselines={"published": {}}, scheduler={"type": "fifo", "max_t": 2})
    bad = _with_unopenable_study(search_yaml(
        tmp / "bad.yaml", synth_dir, store, search={"num_samples": 2, "max_concurrent": 2},
        baselines={"published": {}}, scheduler={"type": "fifo", "max_t": 2}))
    died = _cli("search", "launch", "--config", bad, "--quiet", env=module_ray_env)
    launched = _cli("search", "launch", "--config", good, "--quiet", env=module_ray_env)
    return store / "t", module_ray_env, died, launched


def test_an_early_death_leaves_an_experiment_that_launch_starts_again(signed_experiment):
    exp, env, died, launched = signed_experiment
    assert died.returncode == 2 and "storage.optuna_url: cannot open the study's database" in died.stderr
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert f"{exp}: its launch stopped before Ray's first snapshot; starting it again" in launched.stdout
    assert len(read_trials(exp)) == 2 and (exp / SIGNATURES).is_file() and not (exp / LEASE_FILE).exists()


def test_resume_of_an_experiment_that_died_before_its_first_snapshot_says_launch(tmp_path, synth_dir, search_yaml,
                                                                                 capsys):
    cfg = _with_unopenable_study(search_yaml(tmp_path / "s.yaml", synth_dir, tmp_path / "store"))
    assert main(["search", "launch", "--config", str(cfg), "--quiet"]) == 2
    capsys.readouterr()
    assert main(["search", "resume", str(tmp_path / "store" / "t")]) == 2
    assert "no signed Ray Tune snapshot to resume from" in _one_error_line(capsys.readouterr().err)
    assert main(["search", "launch", "--config", str(cfg), "--quiet"]) == 2  # not "already holds a search"
    assert "already holds" not in capsys.readouterr().err


class _Plant:
    """A pickle that, unpickled, creates the file ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("target", [TUNER_FILE, "searcher-state-2030-01-01_00-00-00.pkl", "searcher-state-*",
                                    "callback-states-x.pkl", "experiment_state-*", "search_gen_state-*"])
def test_a_planted_pickle_is_refused_before_anything_is_unpickled(target, signed_experiment, tmp_path, capsys):
    exp, *_ = signed_experiment
    copy = tmp_path / "t"
    shutil.copytree(exp, copy)
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Plant(marker))
    path = next(copy.glob(target)) if "*" in target else copy / target
    if path.name.startswith("experiment_state"):  # JSON whose trials are hex cloudpickles: change one byte
        payload = path.read_bytes().replace(b'"', b"'", 1)
    path.write_bytes(payload)
    assert main(["search", "resume", str(copy), "--quiet"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(path) in line and ("is not signed" in line or "does not match its signature" in line)
    assert not marker.exists() and not (copy / LEASE_FILE).exists()


def test_state_signed_with_another_key_is_refused_until_trusted(signed_experiment, tmp_path, monkeypatch, capsys):
    exp, env, *_ = signed_experiment
    copy = tmp_path / "t"
    shutil.copytree(exp, copy)
    (copy / next(copy.glob("train_trial_*")).name / "error.pkl").write_bytes(pickle.dumps(_Plant(tmp_path / "x")))
    monkeypatch.setenv("P2M_RESTORE_KEY", "another machine's key, long enough")
    with pytest.raises(UntrustedState, match="does not match its signature"):
        verify(copy, restore_key())
    assert main(["search", "trust", str(copy)]) == 0
    verify(copy, restore_key())  # now it does; the trial's pickled error is deleted on the way
    assert not list(copy.glob("*/error.pkl")) and not (tmp_path / "x").exists()
    with pytest.raises(UntrustedState, match="at least 16"):
        monkeypatch.setenv("P2M_RESTORE_KEY", "short")
        restore_key()


def test_sign_files_signs_pickles_by_name_and_by_header(tmp_path):
    (tmp_path / "experiment_state-1.json").write_text("{}")
    (tmp_path / "renamed-by-a-later-ray.bin").write_bytes(pickle.dumps({"a": 1}))
    (tmp_path / "optuna_journal.log").write_text('{"op_code": 0}\n')
    (tmp_path / SIGNATURES).write_text("{}")
    signed = sign_files(tmp_path, b"k" * 32)
    assert set(signed) == {"experiment_state-1.json", "renamed-by-a-later-ray.bin"}
    assert signed["experiment_state-1.json"] == hmac.new(b"k" * 32, b"experiment_state-1.json\0{}",
                                                         hashlib.sha256).hexdigest()


def _staged_driver(tmp_path, monkeypatch):
    """A SignState, the staging directory and experiment of its (stand-in) first trial."""
    from types import SimpleNamespace

    import pyarrow.fs

    monkeypatch.setenv("P2M_RESTORE_KEY", "k" * 32)  # the key of its own, not one a launch made before it
    staging, exp = tmp_path / "staging", tmp_path / "exp"
    staging.mkdir(), exp.mkdir()
    trial = SimpleNamespace(storage=SimpleNamespace(
        experiment_driver_staging_path=str(staging), storage_filesystem=pyarrow.fs.LocalFileSystem(),
        experiment_fs_path=str(exp)))
    return SignState(), trial, staging, exp


def _snapshot(staging: Path, version: int) -> dict[str, bytes]:
    """Ray's snapshot number ``version`` written into the staging directory; returns its files."""
    files = {"experiment_state-1.json": json.dumps({"trial_data": list(range(version))}).encode(),
             "searcher-state-1.pkl": pickle.dumps({"trials": version}),
             "basic-variant-state-1.json": b"{}"}
    for name, data in files.items():
        (staging / name).write_bytes(data)
    return files


def test_the_first_snapshot_is_signed_in_the_experiment_at_the_end_of_its_step(tmp_path, monkeypatch):
    """Ray snapshots a new experiment in the step that adds its first trials, before any callback sees one; the
    signatures reach the experiment at that step's end, not at Ray's next snapshot 10 s or more later."""
    sign, trial, staging, exp = _staged_driver(tmp_path, monkeypatch)
    sign.on_step_begin(0, [])
    sign.get_state()  # Ray's first snapshot: no trial seen yet, nothing to sign with
    sign.on_step_end(0, [trial])  # ... and no snapshot in the staging directory yet: nothing sent
    assert not (exp / SIGNATURES).exists()
    first = _snapshot(staging, 1)
    sign.on_step_end(1, [trial])
    for name, data in first.items():  # Ray's sync of the first snapshot, after the signatures or before them
        (exp / name).write_bytes(data)
    verify(exp, restore_key())
    assert sorted(p.name for p in exp.iterdir()) == sorted([SIGNATURES, *first])  # no temporary left beside it
    assert not (staging / SIGNATURES).exists()  # Ray's sync never carries them


def test_a_sync_cut_anywhere_leaves_an_experiment_that_verifies(tmp_path, monkeypatch):
    """Ray's sync carries a snapshot's files one by one, in the background, in no fixed order, and a driver can die
    between any two: every mix of the new snapshot's files and the older ones' in the experiment verifies, since
    each snapshot's signatures reach the experiment (at ``get_state``) before Ray starts to sync it."""
    sign, trial, staging, exp = _staged_driver(tmp_path, monkeypatch)
    (staging / SIGNATURES).write_text("{}")  # a restore's copy of an older experiment's signatures
    snapshots = [_snapshot(staging, 1)]
    sign.on_step_end(0, [trial])
    assert not (staging / SIGNATURES).exists()
    for version in range(2, 5):
        for name, data in snapshots[-1].items():  # the previous snapshot is in the experiment
            (exp / name).write_bytes(data)
        snapshots.append(_snapshot(staging, version))
        sign.get_state()  # Ray asks for the callbacks' state after writing its own, and syncs after that
        names = sorted(snapshots[-1])
        for mask in range(2 ** len(names)):  # the sync cut after any subset of the new snapshot's files
            for i, name in enumerate(names):
                (exp / name).write_bytes(snapshots[-1 if mask >> i & 1 else -2][name])
            verify(exp, restore_key())
    (exp / "searcher-state-1.pkl").write_bytes(pickle.dumps({"trials": 99}))  # a version no snapshot had
    with pytest.raises(UntrustedState, match="searcher-state-1.pkl: does not match its signature"):
        verify(exp, restore_key())


def test_the_signatures_keep_the_last_versions_only(tmp_path, monkeypatch):
    sign, trial, staging, exp = _staged_driver(tmp_path, monkeypatch)
    first = _snapshot(staging, 1)
    sign.on_step_end(0, [trial])
    (exp / "searcher-state-1.pkl").write_bytes(first["searcher-state-1.pkl"])
    for version in range(2, KEPT_VERSIONS + 1):
        _snapshot(staging, version)
        sign.get_state()
    verify(exp, restore_key())  # the first of the last KEPT_VERSIONS versions
    _snapshot(staging, KEPT_VERSIONS + 1)
    sign.get_state()
    with pytest.raises(UntrustedState, match="does not match its signature"):
        verify(exp, restore_key())
    signed = json.loads((exp / SIGNATURES).read_text())
    assert len(signed["searcher-state-1.pkl"]) == KEPT_VERSIONS and len(signed["basic-variant-state-1.json"]) == 1


def test_signatures_of_one_digest_per_file_still_verify(tmp_path, monkeypatch):
    """An experiment signed before versions were kept (one digest string per file) resumes."""
    monkeypatch.setenv("P2M_RESTORE_KEY", "k" * 32)
    (tmp_path / "experiment_state-1.json").write_text("{}")
    (tmp_path / SIGNATURES).write_text(json.dumps(sign_files(tmp_path, restore_key())))
    verify(tmp_path, restore_key())
    (tmp_path / SIGNATURES).write_text(json.dumps({"experiment_state-1.json": [1]}))
    with pytest.raises(UntrustedState, match="not a signature file"):
        verify(tmp_path, restore_key())


def test_a_second_driver_is_refused_while_the_first_runs(signed_experiment, tmp_path, search_yaml):
    """A resume, a launch of the same name, a train-best and a trust while launch runs: each refused in one line
    naming the holder; the running search (then interrupted) holds its own trials only."""
    exp, env, *_ = signed_experiment
    # trials long enough to outlast four drivers starting on a loaded machine (about 10 s each, at once)
    cfg, running, first = _start_search(tmp_path, exp, env, search_yaml, max_t=50)
    try:
        deadline = time.time() + 120
        while not (running / LEASE_FILE).exists() and time.time() < deadline:
            time.sleep(0.2)
        assert (running / LEASE_FILE).exists(), "launch never took its lease"
        seconds = [subprocess.Popen([sys.executable, "-m", "p2m.cli", *map(str, argv)], env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                   for argv in (["search", "resume", running], ["search", "launch", "--config", cfg],
                                ["search", "train-best", running, "--seeds", "1"], ["search", "trust", running])]
        errors = [second.communicate(timeout=300)[1] for second in seconds]
        assert first.poll() is None, "the search ended before the other drivers were refused: the test proves nothing"
        for err, second in zip(errors, seconds):
            line = _one_error_line(err)
            assert second.returncode == 2 and f"another driver holds this experiment (launch, pid {first.pid}" in line
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 128 + signal.SIGINT, err[-3000:]
    trials = read_trials(running)
    assert len(trials) == 2 and len(list(running.glob("experiment_state-*.json"))) == 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_search_exits_128_plus_the_signal_and_resumes(signum, signed_experiment, tmp_path, search_yaml):
    """SIGINT or SIGTERM once trials have reported: exit 130 or 143, a line naming the resume command, the
    trials that were running recorded unfinished (not stopped early); the resume finishes them (SIGTERM's case)."""
    from results.parquet import ResultsError, read_results

    exp, env, *_ = signed_experiment
    _, running, driver = _start_search(tmp_path, exp, env, search_yaml, max_t=4)
    try:
        deadline, rows = time.time() + 300, 0
        while rows < 1 and time.time() < deadline and driver.poll() is None:
            time.sleep(0.5)
            try:
                rows = len(read_results(running, dedupe=False))
            except ResultsError:
                rows = 0
        assert rows >= 1 and driver.poll() is None, "no result before the search ended"
        driver.send_signal(signum)
        _, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 128 + signum, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert f"p2m: interrupted ({signal.Signals(signum).name})" in last
    assert f"continue with: p2m search resume {running}" in last
    trials = read_trials(running)
    assert (trials[STOP_REASON] == STOP_UNFINISHED).any() and "stopped_early" not in set(trials[STOP_REASON])
    if signum == signal.SIGTERM:
        again = _cli("search", "resume", running, "--quiet", env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        assert set(read_trials(running)[STOP_REASON]) == {"completed"}


def test_trials_that_all_error_exit_1_naming_the_first_error(signed_experiment, tmp_path):
    exp, env, *_ = signed_experiment
    script = tmp_path / "failing.py"
    script.write_text(f"""
import dataclasses
import sys
from search.config import load_experiment_config
from search.run import launch

def failing(config):
    raise RuntimeError("this trainable always fails")

cfg = dataclasses.replace(load_experiment_config({str(exp / 'search_config.yaml')!r}),
                          storage_path={str(tmp_path / 'store')!r}, name="failing", num_samples=2)
outcome = launch(cfg, verbose=0, trainable=failing)
print(outcome.summary(cfg.max_failures, "resume"))
sys.exit(outcome.exit_code(cfg.max_failures))
""")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "p2m: error: 2 of 2 trials errored (failure.max_failures 0); the first: " in done.stdout
    assert "this trainable always fails" in done.stdout


def test_resources_beyond_the_local_ray_are_refused_not_left_pending(signed_experiment, tmp_path, search_yaml):
    exp, env, *_ = signed_experiment
    cfg = search_yaml(tmp_path / "s.yaml", _data_of(exp), tmp_path / "store", resources={"cpu": 512})
    done = _cli("search", "launch", "--config", cfg, "--quiet", env=env, timeout=200)
    line = _one_error_line(done.stderr)
    assert done.returncode == 2 and "resources.cpu 512: a trial asks for more than any node has" in line
    nan = search_yaml(tmp_path / "n.yaml", _data_of(exp), tmp_path / "store", resources={"cpu": float("nan")})
    done = _cli("search", "launch", "--config", nan, "--quiet", env=env, timeout=200)
    assert done.returncode == 2 and "must be finite" in _one_error_line(done.stderr)


def test_a_race_or_train_best_beyond_the_local_ray_is_refused_too(signed_experiment, tmp_path):
    import yaml

    exp, env, *_ = signed_experiment
    copy = shutil.copytree(exp, tmp_path / "t", ignore=shutil.ignore_patterns(LEASE_FILE))
    settings = copy / SETTINGS_FILE
    data = yaml.safe_load(settings.read_text())
    data["cpu"] = 512  # the settings file holds the flat SearchConfig
    settings.write_text(yaml.safe_dump(data))
    for command in (["train-best", "--seeds", "1"], ["race", "--top", "1", "--seeds", "2"]):
        done = _cli("search", command[0], copy, *command[1:], "--quiet", env=env, timeout=200)
        line = _one_error_line(done.stderr)
        assert done.returncode == 2 and "resources.cpu 512: a trial asks for more than any node has" in line, line
    assert not (copy / RUNS_DIR).exists()


def _start_search(tmp_path: Path, exp: Path, env: dict, search_yaml, max_t: int):
    """A FIFO search of 2 trials on ``exp``'s data launched in the background; (config, experiment, process)."""
    cfg = search_yaml(tmp_path / "s.yaml", _data_of(exp), tmp_path / "store", baselines={"published": {}},
                      search={"num_samples": 2, "max_concurrent": 2}, scheduler={"type": "fifo", "max_t": max_t})
    driver = subprocess.Popen([sys.executable, "-m", "p2m.cli", "search", "launch", "--config", str(cfg), "--quiet"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    return cfg, tmp_path / "store" / "t", driver


def _with_unopenable_study(cfg: Path) -> Path:
    """``cfg`` with its Optuna study in a database that cannot be opened (a directory that does not exist)."""
    import yaml

    data = yaml.safe_load(cfg.read_text())
    data["storage"]["optuna_url"] = "sqlite:////nonexistent-dir/x/study.db"
    cfg.write_text(yaml.safe_dump(data))
    return cfg


def _data_of(exp: Path) -> Path:
    import yaml

    return Path(yaml.safe_load((exp / "search_config.yaml").read_text())["base"]["data"]["root"])


def _cli(*args, env, timeout=600):
    return subprocess.run([sys.executable, "-m", "p2m.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)
