"""Retraining runs as Ray trials (search.runs) on a tiny real search: a race and train-best end to end, on seeds
that neither the search nor the other used, and each of them SIGKILLed mid-way and run again: the same command
finishes, every run is recorded once, and no run that had finished before the kill is trained again."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from p2m.config import load_config
from p2m.names import (CURVES_FILE, METRICS_FILE, OBJECTIVE, RUN_CONFIG_FILE, RUNS_DIR, RUNS_FINISHED_DIR,
                       TRAIN_BEST_RESULTS_FILE, TRAIN_BEST_VIEWS_FILE, train_best_dir)
from results.analysis.race import race_state
from results.runs import read_race, read_runs, summarise_runs
from results.schema import ARM, BASELINE, PHASE, PHASE_RACE, PHASE_VERDICT, ROUND, SEED, STOP_COMPLETED, TRIAL_ID
from results.parquet import read_results, read_trials
from results.trials import pick_best, rank_trials

pytestmark = pytest.mark.timeout(900)

ROUNDS, MIN_ROUNDS = 2, 2
RACE = ("--seeds", ROUNDS, "--min-rounds", MIN_ROUNDS)
CLI = [sys.executable, "-m", "p2m.cli"]
_SEARCH: dict[str, Path] = {}  # the module's one search, run by the first test that needs it


@pytest.fixture
def searched(synth_dir, tmp_path_factory, tmp_path, ray_env, search_yaml, p2m_run) -> Path:
    """A copy of a finished tiny search (published, uniform and 2 searched trials, 2 epochs each, all completed),
    in this test's own directory; the search itself runs once per module, on the Ray of the first test to ask."""
    if "exp" not in _SEARCH:
        root = tmp_path_factory.mktemp("search")
        cfg = search_yaml(root / "s.yaml", synth_dir, root / "exp", search={"num_samples": 4},
                          scheduler={"type": "fifo", "max_t": 2})
        result = p2m_run("search", "launch", "--config", cfg, "--quiet", env=ray_env, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        _SEARCH["exp"] = root / "exp" / "t"
    exp = tmp_path / "exp" / "t"
    shutil.copytree(_SEARCH["exp"], exp, ignore=shutil.ignore_patterns("train_trial_*"))  # not the checkpoints
    trials = read_trials(exp)
    assert len(trials) == 4 and (trials["stop_reason"] == STOP_COMPLETED).all(), trials[[TRIAL_ID, "stop_reason"]]
    return exp


def test_race_then_train_best_on_fresh_seeds(searched, ray_env, p2m_run):
    exp = searched
    trials = read_trials(exp)
    base = _base_seed(trials)
    ranked = rank_trials(trials)[TRIAL_ID].tolist()
    published = trials.loc[trials[BASELINE] == "published", TRIAL_ID].iloc[0]
    top = 2 if ranked[0] == published else 1  # two candidates: published and the best other trial
    result = p2m_run("search", "race", exp, "--top", top, *RACE, "--quiet", env=ray_env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    # the race's candidates are the best trials and published; the winner is one of them, on the record
    record = read_race(exp)
    assert record["candidates"] == list(dict.fromkeys([*ranked[:top], published])) and len(record["candidates"]) == 2
    assert record["winner"] in record["candidates"] and record["winner"] in record["survivors"]
    assert record["seeds"] == [base + 1000, base + 1001] and 1 <= record["rounds"] <= ROUNDS
    assert f"race winner: {record['labels'][record['winner']]}" in result.stdout
    _check_record(exp, record)

    # each round is a Ray experiment of its own, whose rows carry the run's arm, seed and round
    race_runs = summarise_runs(read_runs(exp, PHASE_RACE))
    for r in range(1, record["rounds"] + 1):
        (phase,) = (exp / RUNS_DIR).glob(f"race-r{r:02d}-*")
        rows = read_results(phase)
        ran = race_runs[race_runs[ROUND] == r]
        assert set(rows[PHASE]) == {PHASE_RACE} and set(rows[ROUND]) == {r}
        assert set(rows[SEED]) == {record["seeds"][r - 1]} == set(ran[SEED])
        assert sorted(rows[ARM].unique()) == sorted(record["labels"][t] for t in ran[TRIAL_ID])
        assert sorted(rows["training_iteration"]) == sorted([1, 2] * len(ran))  # every epoch of every run, once

    # train-best on the race's seeds is refused, in one line naming them, and trains nothing
    finished = _ledger(exp)
    phases = sorted(p.name for p in (exp / RUNS_DIR).iterdir())
    refused = p2m_run("search", "train-best", exp, "--seeds", 2, "--first-seed", base + 1000, "--quiet",
                      env=ray_env, timeout=300)
    assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
    errors = [line for line in refused.stderr.splitlines() if line.startswith("p2m: error:")]
    assert len(errors) == 1 and f"seeds {record['seeds']} were used by the race" in errors[0], refused.stderr
    assert _ledger(exp) == finished and sorted(p.name for p in (exp / RUNS_DIR).iterdir()) == phases
    assert not (exp / train_best_dir()).exists()

    # train-best retrains the race's winner on its own seeds: the search's, the race's and its own never meet
    result = p2m_run("search", "train-best", exp, "--seeds", 2, "--previews", 1, "--quiet", env=ray_env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"best: trial {record['winner']}, the race's winner" in result.stdout
    table = pd.read_parquet(exp / train_best_dir() / TRAIN_BEST_RESULTS_FILE)
    assert table[TRIAL_ID].tolist() == [record["winner"]] * 2
    assert table[SEED].tolist() == [base + 2000, base + 2001] and (table[PHASE] == PHASE_VERDICT).all()
    assert (table["split"] == "test").all() and (table["epochs"] == 2).all() and (table["test_views"] > 0).all()
    assert table[OBJECTIVE].notna().all() and (table["test_s3_cd"] > 0).all()
    search_seeds = set(trials["config.seed"].astype(int))
    race_seeds = set(read_runs(exp, PHASE_RACE)[SEED].astype(int))
    verdict_seeds = set(read_runs(exp, PHASE_VERDICT)[SEED].astype(int))
    assert search_seeds == {base} and race_seeds == set(record["seeds"][:record["rounds"]])
    assert verdict_seeds == set(table[SEED])
    assert not (search_seeds & race_seeds or search_seeds & verdict_seeds or race_seeds & verdict_seeds)
    views = pd.read_parquet(exp / train_best_dir() / TRAIN_BEST_VIEWS_FILE)
    per_seed = views.groupby(SEED).size()
    assert per_seed.index.tolist() == table[SEED].tolist() and (per_seed == table["test_views"].values).all()
    (phase,) = (exp / RUNS_DIR).glob("train-best-*")
    rows = read_results(phase)
    assert set(rows[ARM]) == {"best"} and set(rows[ROUND]) == {0} and set(rows[SEED]) == verdict_seeds
    for seed in table[SEED]:  # each run's config, curves, metrics and previews beside the tables
        run_dir = exp / train_best_dir() / f"seed{seed}"
        assert load_config(run_dir / RUN_CONFIG_FILE).seed == seed
        assert [r["epoch"] for r in _jsonl(run_dir / METRICS_FILE)] == [1, 2]
        assert (run_dir / CURVES_FILE).stat().st_size > 0
        assert len(list((run_dir / "previews").glob("*.png"))) == 1


@pytest.mark.system  # a driver killed mid-search: the real-cluster stage
def test_train_best_survives_a_sigkilled_driver(searched, ray_env, p2m_run):
    """2 arms x 2 seeds, 2 at a time: killed once a run has finished, the same command finishes the others and
    leaves the finished ones as they were."""
    exp = searched
    trials = read_trials(exp)
    best = pick_best(trials)
    other = next(b for b in ("published", "uniform") if b != best[BASELINE])  # a baseline that is not the best
    arms = {"best": best[TRIAL_ID], other: trials.loc[trials[BASELINE] == other, TRIAL_ID].iloc[0]}
    seeds = [_base_seed(trials) + 2000, _base_seed(trials) + 2001]
    expected = {_run_name(t, s) for t in arms.values() for s in seeds}
    args = ["search", "train-best", exp, "--seeds", 2, "--baseline", other, "--previews", 0, "--quiet"]

    killed_at = _kill_when_a_run_finished(args, exp, ray_env)
    before = _ledger(exp)
    assert 1 <= len(before) < len(expected), f"{sorted(before)} finished when the driver was killed"
    outputs = {name: _stat(exp / _output_dir(arms, name) / METRICS_FILE) for name in before}

    result = p2m_run(*args, env=ray_env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"train-best: {len(expected) - len(before)} of {len(expected)} runs to train" in result.stdout
    after = _ledger(exp)
    assert set(after) == expected  # every run recorded, once (one file per run), and no other
    assert {name: after[name] for name in before} == before  # the finished runs' records were not rewritten ...
    assert {name: _stat(exp / _output_dir(arms, name) / METRICS_FILE) for name in before} == outputs  # ... nor outputs
    # the phase was restored, not started again: one experiment, in which the runs finished before the kill
    # reported nothing after it, and every other run reported its last epoch
    (phase,) = (exp / RUNS_DIR).glob("train-best-*")
    _check_reported_after(read_results(phase, dedupe=False), killed_at, arms, before, expected)

    for arm, trial_id in arms.items():
        table = pd.read_parquet(exp / train_best_dir(None if arm == "best" else arm) / TRAIN_BEST_RESULTS_FILE)
        assert table[TRIAL_ID].tolist() == [trial_id] * 2 and table[SEED].tolist() == seeds, table
        assert (table["test_views"] > 0).all() and table["test_s3_cd"].notna().all()


@pytest.mark.system  # a driver killed mid-search: the real-cluster stage
def test_race_survives_a_sigkilled_driver(searched, ray_env, p2m_run):
    """Killed in its first round (3 candidates, 2 at a time) once a run has finished, the same command
    completes the race: it restores the round, its record is what the rule gives on the finished runs, each run was
    trained once, and the ones finished before the kill were left as they were."""
    exp = searched
    trials = read_trials(exp)
    published = trials.loc[trials[BASELINE] == "published", TRIAL_ID].iloc[0]
    top = 3 if published in rank_trials(trials)[TRIAL_ID].tolist()[:2] else 2  # three candidates, published one
    args = ["search", "race", exp, "--top", top, *RACE, "--quiet"]

    killed_at = _kill_when_a_run_finished(args, exp, ray_env)
    before = _ledger(exp)
    assert before and read_race(exp) is None, f"{sorted(before)} finished when the driver was killed"

    result = p2m_run(*args, env=ray_env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = read_race(exp)
    _check_record(exp, record)
    dropped = {c: d["round"] for c, d in record["dropped"].items()}
    expected = {_run_name(c, record["seeds"][r - 1]) for c in record["candidates"]
                for r in range(1, min(dropped.get(c, record["rounds"]), record["rounds"]) + 1)}
    assert len(record["candidates"]) == 3 and len(before) < 3  # killed in round 1, one of its runs unfinished
    after = _ledger(exp)
    assert set(after) == expected  # each run of the race recorded, once
    assert {name: after[name] for name in before} == before  # the runs finished before the kill: not rewritten
    for r in range(1, record["rounds"] + 1):  # each round's experiment restored, never started twice
        assert len(list((exp / RUNS_DIR).glob(f"race-r{r:02d}-*"))) == 1, sorted((exp / RUNS_DIR).iterdir())
    rows = pd.concat([read_results(p, dedupe=False) for p in sorted((exp / RUNS_DIR).glob("race-r*"))])
    arms = {record["labels"][c]: c for c in record["candidates"]}
    _check_reported_after(rows, killed_at, arms, before, expected)


def _base_seed(trials: pd.DataFrame) -> int:
    (seed,) = set(trials["config.seed"].astype(int))  # every trial of the search trained with the base seed
    return seed


def _run_name(trial_id: str, seed: int) -> str:
    return f"{trial_id}-seed{int(seed)}.parquet"


def _ledger(exp: Path) -> dict[str, tuple]:
    """The ledger's files, each with what a rewrite would change: inode, mtime and bytes."""
    folder = exp / RUNS_DIR / RUNS_FINISHED_DIR
    return {p.name: _stat(p) for p in folder.glob("*.parquet")} if folder.is_dir() else {}


def _stat(path: Path) -> tuple:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, path.read_bytes()


def _output_dir(arms: dict, name: str) -> str:
    trial_id, seed = name[:-len(".parquet")].rsplit("-seed", 1)
    arm = next(a for a, t in arms.items() if t == trial_id)
    return f"{train_best_dir(None if arm == 'best' else arm)}/seed{seed}"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _kill_when_a_run_finished(args: list, exp: Path, env: dict, timeout_s: float = 300) -> float:
    """Run the CLI with ``args`` in a session of its own and SIGKILL it (with the Ray it started) as soon as the
    ledger holds a finished run; returns when it was killed. Fails when the command ends first."""
    driver = subprocess.Popen([*CLI, *map(str, args)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout_s
    while time.time() < deadline and driver.poll() is None and not _ledger(exp):
        time.sleep(0.2)
    assert driver.poll() is None, f"{args[1]} ended (status {driver.poll()}) before it could be killed"
    assert _ledger(exp), f"no run finished within {timeout_s} s"
    os.killpg(driver.pid, signal.SIGKILL)
    killed_at = time.time()
    driver.wait()
    time.sleep(2)  # what the kill left running dies with its raylet
    return killed_at


def _check_reported_after(rows: pd.DataFrame, killed_at: float, arms: dict, before: dict, expected: set) -> None:
    """In the phases' rows (``arms``: arm label -> trial id): no run of ``before`` reported after the kill, and
    every other run of ``expected`` reported its last epoch then."""
    by_trial = {t: a for a, t in arms.items()}
    later = rows[rows["timestamp"] > killed_at]  # Ray's timestamp: whole seconds, floored
    reported = {(a, int(s)) for a, s in zip(later[ARM], later[SEED])}
    last = {(a, int(s)) for a, s in zip(later.loc[later["training_iteration"] == 2, ARM],
                                       later.loc[later["training_iteration"] == 2, SEED])}
    for name in expected:
        trial_id, seed = name[:-len(".parquet")].rsplit("-seed", 1)
        run = (by_trial[trial_id], int(seed))
        if name in before:
            assert run not in reported, f"{run} finished before the kill and was trained again"
        else:
            assert run in last, f"{run} did not report its last epoch after the kill"


def _check_record(exp: Path, record: dict) -> None:
    """The race's record is what the elimination rule gives on the race's finished runs."""
    runs = summarise_runs(read_runs(exp, PHASE_RACE))
    values = pd.DataFrame({"candidate": runs[TRIAL_ID].astype(str), "round": runs[ROUND].astype(int),
                           "seed": runs[SEED].astype(int), "value": runs[OBJECTIVE].astype(float)})
    state = race_state(values, record["candidates"], ROUNDS, MIN_ROUNDS)
    assert state.done and state.ignored == 0, state
    assert record["winner"] == state.winner and record["rounds"] == state.round
    assert record["survivors"] == list(state.survivors) and set(record["dropped"]) == set(state.dropped)
    assert record["seeds"][:state.round] == list(state.seeds)
    assert record["means"] == pytest.approx(state.means)


def test_a_race_in_the_config_runs_at_the_end_of_launch_and_resume_does_not_train_it_again(
        synth_dir, tmp_path, ray_env, search_yaml, p2m_run):
    """``race: {top, seeds, min_rounds}`` in a search's config: the race runs when the search ends, its settings are
    recorded, and a resume of the finished experiment replays the race from its ledger without training a run."""
    cfg = search_yaml(tmp_path / "s.yaml", synth_dir, tmp_path / "exp", search={"num_samples": 3},
                      baselines={"published": {}}, scheduler={"type": "fifo", "max_t": 1},
                      race={"top": 1, "seeds": 2, "min_rounds": 2})
    result = p2m_run("search", "launch", "--config", cfg, "--quiet", env=ray_env, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    exp = tmp_path / "exp" / "t"
    record = read_race(exp)
    assert record is not None and record["rounds"] == 2 and record["seeds"] == [1000, 1001]
    assert "race winner:" in result.stdout.split("leaderboard:")[-1]  # after the search's leaderboard
    ledger = sorted((exp / RUNS_DIR / RUNS_FINISHED_DIR).iterdir())
    assert len(ledger) == 2 * len(record["candidates"])
    stamps = {p.name: p.stat().st_mtime_ns for p in ledger}

    result = p2m_run("search", "resume", exp, "--quiet", env=ray_env, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "runs to train" not in result.stdout and read_race(exp)["winner"] == record["winner"]
    assert {p.name: p.stat().st_mtime_ns for p in (exp / RUNS_DIR / RUNS_FINISHED_DIR).iterdir()} == stamps
