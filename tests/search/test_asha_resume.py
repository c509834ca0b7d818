"""ASHA after ``resume`` (issue 29, defect 4): Ray restores the scheduler as pickled at launch, its rungs empty
(ray-project/ray#30838); :func:`search.schedulers.asha.rebuild_rungs` puts back every searched trial's value at each
milestone from the results rows, so a resumed search stops exactly the trials an uninterrupted one would."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from ray.tune.schedulers import TrialScheduler

from p2m.names import OBJECTIVE
from results.schema import BASELINE, ITERATION, TRIAL_ID
from search.ray_adapter import asha_milestones
from results.settings import SearchSettings
from search.schedulers import strategy
from search.schedulers.asha import rebuild_rungs

MAX_T, GRACE, RF, CONCURRENCY = 8, 1, 2, 4
PUBLISHED = {"loss.w1_edge": 0.1}


def _curves(trials: int = 12, seed: int = 3) -> dict[str, np.ndarray]:
    """trial id -> its objective at epochs 1..MAX_T, a + b / epoch: curves that cross (a slow starter can end
    best); the first trial is the baseline "published", the worst of all throughout."""
    rng = np.random.default_rng(seed)
    epochs = np.arange(1, MAX_T + 1)
    curves = {"base": 5.0 + 4.0 / epochs}
    for i in range(trials):
        a, b = rng.uniform(0.5, 1.5), rng.uniform(0.0, 3.0)
        curves[f"t{i:02d}"] = a + b / epochs
    return curves


def _scheduler():
    return strategy("asha").build(SearchSettings(max_t=MAX_T, grace_period=GRACE, reduction_factor=RF), {},
                                  {"published": PUBLISHED})


@dataclass
class _Search:
    """Ray's controller in miniature: trials start in order, CONCURRENCY at a time; each round every running
    trial reports its next epoch, in order; a trial the scheduler stops is completed and its slot goes to the next.
    ``rows`` are the results rows the Parquet callback writes (one per result, the baseline's name on each)."""
    curves: dict[str, np.ndarray]
    scheduler: object
    queue: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    epoch: dict[str, int] = field(default_factory=dict)
    stopped: dict[str, int] = field(default_factory=dict)  # trial -> the epoch ASHA stopped it at, before MAX_T
    rows: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.queue = list(self.curves)
        self.trials = {tid: SimpleNamespace(trial_id=tid, config=dict(PUBLISHED) if tid == "base" else
                                            {"loss.w1_edge": 0.2 + 0.01 * i}) for i, tid in enumerate(self.curves)}
        self._fill()

    def run(self, results: int | None = None) -> None:
        """Go on until the search ends, or until ``results`` more results were reported."""
        done = 0
        while self.running and (results is None or done < results):
            for tid in list(self.running):
                if results is not None and done >= results:
                    return
                self._report(tid)
                done += 1

    def restore(self, scheduler, lag: int = 0) -> None:
        """The driver died: ``scheduler`` is the one Ray restores (as at launch); it is told of every trial, as Ray's
        restore adds them. Running trials go on from their checkpoint, ``lag`` epochs behind their last result
        (reporting those epochs again)."""
        self.scheduler = scheduler
        for tid in self.epoch:
            scheduler.on_trial_add(None, self.trials[tid])
        for tid in self.running:
            self.epoch[tid] = max(self.epoch[tid] - lag, 0)

    def _report(self, tid: str) -> None:
        self.epoch[tid] += 1
        t = self.epoch[tid]
        result = {ITERATION: t, OBJECTIVE: float(self.curves[tid][t - 1])}
        decision = self.scheduler.on_trial_result(None, self.trials[tid], result)
        self.rows.append({TRIAL_ID: tid, ITERATION: t, OBJECTIVE: result[OBJECTIVE],
                          BASELINE: "published" if tid == "base" else None})
        if decision == TrialScheduler.STOP:
            self.scheduler.on_trial_complete(None, self.trials[tid], result)
            if t < MAX_T:
                self.stopped[tid] = t
            self.running.remove(tid)
            self._fill()

    def _fill(self) -> None:
        while self.queue and len(self.running) < CONCURRENCY:
            tid = self.queue.pop(0)
            self.scheduler.on_trial_add(None, self.trials[tid])
            self.epoch[tid] = 0
            self.running.append(tid)


def _uninterrupted() -> _Search:
    search = _Search(_curves(), _scheduler())
    search.run()
    return search


def _resumed(rebuild: bool, lag: int = 0) -> _Search:
    total = len(_uninterrupted().rows)
    search = _Search(_curves(), _scheduler())
    search.run(results=total // 2)
    fresh = _scheduler()
    search.restore(fresh, lag=lag)
    if rebuild:
        rebuilt = rebuild_rungs(fresh, pd.DataFrame(search.rows), asha_milestones(_scheduler()))
        assert rebuilt.trials == len({r[TRIAL_ID] for r in search.rows}) - 1  # every searched trial, no baseline
        assert rebuilt.values > 0
    search.run()
    return search


@pytest.mark.parametrize("lag", [0, 1])
def test_a_resumed_search_stops_the_trials_an_uninterrupted_one_would(lag):
    """Half the results, a fresh scheduler whose rungs are rebuilt from those rows, the rest: the same trials are
    stopped at the same epochs. ``lag`` 1: the running trials report their last epoch again (a checkpoint behind
    the rows), which finds their values already recorded."""
    whole = _uninterrupted()
    assert 0 < len(whole.stopped) < len(whole.curves) - 1  # ASHA did stop some searched trials, not all
    assert "base" not in whole.stopped
    resumed = _resumed(rebuild=True, lag=lag)
    assert resumed.stopped == whole.stopped


def test_without_the_rebuild_a_resumed_search_stops_other_trials():
    """What Ray alone does (the rungs of launch, empty): the test above can fail."""
    assert _resumed(rebuild=False).stopped != _uninterrupted().stopped


def test_rows_of_a_baseline_are_not_recorded():
    """A baseline's rows that would lower the bar (worse than every searched trial at every epoch) change nothing."""
    curves = _curves()
    rows = pd.DataFrame([{TRIAL_ID: tid, ITERATION: e, OBJECTIVE: float(curves[tid][e - 1]),
                          BASELINE: "published" if tid == "base" else None}
                         for tid in curves for e in (1, 2)])
    without = _scheduler()
    rebuilt = rebuild_rungs(without, rows[rows[TRIAL_ID] != "base"])
    with_base = _scheduler()
    assert rebuild_rungs(with_base, rows) == rebuilt
    assert rebuilt.trials == len(curves) - 1 and rebuilt.values == 2 * (len(curves) - 1)
    late = SimpleNamespace(trial_id="late", config={"loss.w1_edge": 0.9})
    for sched in (without, with_base):
        sched.on_trial_add(None, late)
    # a searched trial just worse than the searched trials' median at epoch 1: stopped in both (the baseline's
    # 9.0 at epoch 1 would have put the cutoff elsewhere)
    worse = float(np.median([curves[t][0] for t in curves if t != "base"])) + 1e-3
    for sched in (without, with_base):
        assert sched.on_trial_result(None, late, {ITERATION: 1, OBJECTIVE: worse}) == TrialScheduler.STOP


def test_a_duplicate_row_counts_once_its_last_value():
    rows = pd.DataFrame({TRIAL_ID: ["a", "a", "b"], ITERATION: [1, 1, 1], OBJECTIVE: [5.0, 1.0, 2.0],
                         BASELINE: [None, None, None]})
    sched = _scheduler()
    assert rebuild_rungs(sched, rows).values == 2
    late = SimpleNamespace(trial_id="late", config={"loss.w1_edge": 0.9})
    sched.on_trial_add(None, late)
    # a's last value, 1.0, is recorded (5.0 would have let 1.9 pass): the cutoff is the median of {1.0, 2.0}
    assert sched.on_trial_result(None, late, {ITERATION: 1, OBJECTIVE: 1.9}) == TrialScheduler.STOP


def test_milestones_other_than_the_schedulers_are_refused():
    with pytest.raises(ValueError, match=r"milestones must be the restored scheduler's \[1.0, 2.0, 4.0, 8.0\]"):
        rebuild_rungs(_scheduler(), pd.DataFrame(columns=[TRIAL_ID, ITERATION, OBJECTIVE]), (1.0, 3.0))


def test_rows_without_the_objective_are_refused():
    with pytest.raises(ValueError, match=rf"missing \['{OBJECTIVE}'\]"):
        rebuild_rungs(_scheduler(), pd.DataFrame(columns=[TRIAL_ID, ITERATION]))


def test_no_rows_rebuild_nothing():
    rebuilt = rebuild_rungs(_scheduler(), pd.DataFrame(columns=[TRIAL_ID, ITERATION, OBJECTIVE, BASELINE]))
    assert (rebuilt.results, rebuilt.trials, rebuilt.values) == (0, 0, 0)
    assert str(rebuilt) == "ASHA: rungs rebuilt from 0 results of 0 trials (milestones 1, 2, 4, 8)"


DRIVER = """
import sys, threading, time, zlib

from p2m.names import OBJECTIVE
from search.config import load_search_config
from search.run import launch, resume


def curve(config):
    from ray import tune

    key = zlib.crc32(repr(sorted(config.items())).encode())
    a, b = 1 + key % 97 / 97, key % 89 / 30
    for epoch in range(1, 5):
        time.sleep(0.5)
        try:
            tune.report({OBJECTIVE: a + b / epoch})
        except SystemExit:  # Ray stops the trial: park the thread, as search.trainable does
            threading.Event().wait()


if sys.argv[1] == "launch":
    launch(load_search_config(sys.argv[2], {}), verbose=0, trainable=curve)
else:
    sys.exit(resume(sys.argv[2], verbose=0, trainable=curve).exit_code(0))
"""


def test_resume_prints_the_rungs_it_rebuilt(tmp_path, synth_dir, search_yaml, ray_env):
    """A real launch (synthetic curves, no training) SIGKILLed once searched trials have passed a milestone, then
    ``resume``: the restored ASHA's rungs are rebuilt from those rows, and it says so."""
    from results.parquet import ResultsError, read_results

    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    cfg = search_yaml(tmp_path / "s.yaml", synth_dir, tmp_path / "store", baselines={"published": {}},
                      search={"num_samples": 4, "max_concurrent": 2, "seed": 0},
                      scheduler={"type": "asha", "max_t": 4, "grace_period": 1, "reduction_factor": 2})
    exp = tmp_path / "store" / "t"
    log = tmp_path / "launch.log"
    with log.open("w") as out:
        driver = subprocess.Popen([sys.executable, str(script), "launch", str(cfg)], env=ray_env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, searched = time.time() + 180, 0
        while searched < 2 and time.time() < deadline and driver.poll() is None:
            time.sleep(0.5)
            try:
                searched = int(read_results(exp, dedupe=False)[BASELINE].isna().sum())
            except (ResultsError, KeyError):
                searched = 0
        assert driver.poll() is None and searched >= 2, \
            f"{searched} rows of searched trials before the kill: {log.read_text()[-3000:]}"
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    done = subprocess.run([sys.executable, str(script), "resume", str(exp)], env=ray_env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("ASHA: rungs rebuilt")]
    match = re.fullmatch(r"ASHA: rungs rebuilt from (\d+) results of (\d+) trials \(milestones 1, 2, 4\)", line)
    assert match and int(match[1]) >= 2 and int(match[2]) >= 1, line
