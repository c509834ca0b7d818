"""Experiments on object storage, against a real S3-protocol server on 127.0.0.1 (moto's server mode) that the
tests start themselves: the storage functions, then a search launched on s3://, SIGKILLed, resumed from another
machine's cache (the Optuna journal travels in Ray's snapshot), analysed and retrained from there."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from p2m.names import METRICS_FILE, SETTINGS_FILE, TRAIN_BEST_DIR, TRAIN_BEST_RESULTS_FILE, WEIGHTS_FILE
from results import storage
from results.schema import BEST_OBJECTIVE, LAST_OBJECTIVE, STOP_COMPLETED, STOP_EARLY
from results.parquet import list_parts, read_results, read_trials



def test_storage_functions_on_s3(s3, s3_bucket, tmp_path):
    BUCKET = s3_bucket
    base = storage.location(f"s3://{BUCKET}/unit/")
    assert base == f"s3://{BUCKET}/unit" and storage.join(base, "a", "b.txt") == f"s3://{BUCKET}/unit/a/b.txt"
    storage.write_bytes(storage.join(base, "a", "b.txt"), b"hello")
    storage.write_bytes(storage.join(base, "a", "c.bin"), b"\x00\x01")
    assert storage.read_bytes(storage.join(base, "a", "b.txt")) == b"hello"
    assert storage.list_files(storage.join(base, "a"), suffix=".txt") == [f"s3://{BUCKET}/unit/a/b.txt"]
    assert storage.subdirs(base) == ["a"] and storage.list_files(storage.join(base, "nothing")) == []
    assert storage.is_file(storage.join(base, "a", "b.txt")) and not storage.exists(storage.join(base, "x"))
    with pytest.raises(FileNotFoundError, match=f"s3://{BUCKET}/unit/x: no such object"):
        storage.read_bytes(storage.join(base, "x"))
    (tmp_path / "up" / "sub").mkdir(parents=True)
    (tmp_path / "up" / "sub" / "d.txt").write_text("d")
    storage.upload_dir(tmp_path / "up", storage.join(base, "up"))
    local = storage.download(base, tmp_path / "down", ("a", "up", "missing"))
    assert (local / "a" / "b.txt").read_bytes() == b"hello" and (local / "up" / "sub" / "d.txt").read_text() == "d"
    storage.delete(storage.join(base, "a", "b.txt"))
    storage.delete(storage.join(base, "a", "b.txt"))  # gone already: nothing
    assert storage.list_files(storage.join(base, "a")) == [f"s3://{BUCKET}/unit/a/c.bin"]


def test_locations_refuse_what_they_cannot_reach():
    with pytest.raises(ValueError, match="http://h/x: unsupported storage scheme 'http'"):
        storage.location("http://h/x")
    with pytest.raises(ValueError, match="s3://: missing bucket name"):
        storage.location("s3://")
    assert storage.location("file:///tmp/x") == Path("/tmp/x")


@pytest.mark.system  # a driver killed mid-search: the real-cluster stage
def test_search_on_s3_is_killed_resumed_elsewhere_analysed_and_retrained(s3, synth_dir, tmp_path, ray_env, search_yaml,
                                                                         p2m_run, kill_search_midway, monkeypatch,
                                                                         s3_bucket, check_retention):
    """A two-objective search with the learned-weighting baseline beside it, on s3://: SIGKILLed mid-search, resumed
    by a driver with another cache (another head node), every trial finished exactly once; then analysed and
    retrained from the bucket. (The single-objective SIGKILL on a local disk: tests/search/test_cluster.py.)"""
    env = {**ray_env, **s3, "P2M_CACHE_DIR": str(tmp_path / "head-a")}
    cfg = search_yaml(tmp_path / "s.yaml", synth_dir, f"s3://{s3_bucket}/exp", scheduler={"max_t": 4},
                      failure={"max_failures": 1}, baselines={"learned": {}},
                      search={"num_samples": 6, "objectives": ["val_s3_cd", "val_s3_normal_consistency"]})
    side = 1  # trials the Optuna study never holds
    exp = f"s3://{s3_bucket}/exp/t"
    kill_search_midway(cfg, exp, env, rows=5)
    assert storage.is_file(storage.join(exp, SETTINGS_FILE))
    assert not list(tmp_path.glob("s3*")) and not list(Path.cwd().glob("s3:*"))  # nothing went to a local "s3:"

    resumed_env = {**env, "P2M_CACHE_DIR": str(tmp_path / "head-b")}
    result = p2m_run("search", "resume", exp, "--quiet", env=resumed_env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Traceback" not in output and "Fatal Python error" not in output, output[-3000:]
    trials = read_trials(exp)
    assert len(trials) == 6
    # every trial that reported keeps its figures, restored ones too (they come from the rows)
    reported = trials[trials["iterations"] > 0]
    assert reported[BEST_OBJECTIVE].notna().all() and reported[LAST_OBJECTIVE].notna().all()
    assert set(trials["stop_reason"]) <= {STOP_COMPLETED, STOP_EARLY}, trials[["trial_id", "stop_reason", "error"]]
    table = read_results(exp)
    assert len(read_results(exp, dedupe=False)) == len(table)  # compacted: no row twice on the bucket
    assert len(list_parts(storage.join(exp, "results"))) == 1
    for trial_id, n in zip(trials["trial_id"], trials["iterations"]):
        assert sorted(table.loc[table.trial_id == trial_id, "training_iteration"]) == list(range(1, n + 1))
    check_retention(exp, trials)  # in the bucket: the checkpoints of the ended trials the rule does not keep are gone
    # the study came from Ray's snapshot in the bucket to the new head's cache, and every trial in it finished
    from search.optuna_adapter import STUDY_NAME, SnapshotJournalBackend, optuna_storage

    monkeypatch.setenv("P2M_CACHE_DIR", str(tmp_path / "head-b"))
    assert SnapshotJournalBackend.local_path(exp).is_file(), "the resumed driver kept no journal"
    study = optuna.load_study(study_name=STUDY_NAME, storage=optuna_storage(exp))
    assert all(t.state.is_finished() for t in study.trials)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) >= len(trials) - side
    assert len(study.directions) == 2 and all(len(t.values) == 2 for t in finished if t.state.name == "COMPLETE")
    # the baseline beside the search ran once, to the end, and logged its learned weights every epoch
    learned = trials[trials["baseline"] == "learned"]
    assert len(learned) == 1 and learned["stop_reason"].tolist() == [STOP_COMPLETED]
    weights = table.loc[table["baseline"] == "learned", "learned_w3_chamfer"]
    assert len(weights) == 4 and weights.notna().all()

    out = p2m_run("results", "analyze", exp, env=resumed_env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"uploaded to {exp}/analysis" in out.stdout
    assert storage.is_file(storage.join(exp, "analysis", "report.md"))

    best = p2m_run("search", "train-best", exp, "--seeds", "1", "--epochs", "1", "--previews", "0", "--no-progress",
                   env=resumed_env)
    assert best.returncode == 0, best.stdout[-2000:] + best.stderr[-2000:]
    assert storage.is_file(storage.join(exp, TRAIN_BEST_DIR, TRAIN_BEST_RESULTS_FILE))
    seed = int(trials["config.seed"].iloc[0]) + 2000  # train-best's first seed: the search's + 2000
    assert storage.is_file(storage.join(exp, TRAIN_BEST_DIR, f"seed{seed}", METRICS_FILE))  # its run's outputs too
    assert storage.is_file(storage.join(exp, TRAIN_BEST_DIR, f"seed{seed}", WEIGHTS_FILE))  # with its weights
    runs = storage.join(exp, "runs")
    assert not [c for phase in storage.subdirs(runs) for run in storage.subdirs(storage.join(runs, phase))
                for c in storage.subdirs(storage.join(runs, phase, run)) if c.startswith("checkpoint_")]
