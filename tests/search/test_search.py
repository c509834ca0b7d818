"""A real search on a private local Ray: ASHA, PRUNED in Optuna, Parquet rows, baselines, a NaN trial."""
import json
import re

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from optuna.storages.journal import JournalFileBackend, JournalStorage

from p2m.names import JOURNAL_FILE, OBJECTIVE
from results.schema import BEST_ARM, BEST_OBJECTIVE, LAST_OBJECTIVE, STOP_COMPLETED, STOP_EARLY, STOP_ERRORED, WEIGHT_COLUMNS
from results.parquet import read_results, read_trials
from search.optuna_adapter import STUDY_NAME
from results.analysis.pareto import pick_on_front
from search.space import PUBLISHED

pytestmark = pytest.mark.timeout(900)


def _study(exp):
    return optuna.load_study(study_name=STUDY_NAME, storage=JournalStorage(JournalFileBackend(str(exp / JOURNAL_FILE))))


def test_search_end_to_end(synth_dir, tmp_path, ray_env, search_yaml, p2m_run, check_retention):
    cfg = search_yaml(tmp_path / "s.yaml", tmp_path / "not-the-data", tmp_path / "exp",
                      search={"num_samples": 7},
                      baselines={"published": {}, "uniform": {"loss.w1_laplacian": 0.5}, "diverges": {"optim.lr": 1e6}},
                      space={"optim.lr": {"choice": [0.0003, 1000000.0]}})
    # --data (relative to where the search is launched) replaces the config's dataset
    result = p2m_run("search", "launch", "--config", cfg, "--quiet", "--data", synth_dir.name, env=ray_env,
                     cwd=synth_dir.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "leaderboard: 7 trials" in result.stdout
    exp = tmp_path / "exp" / "t"
    rows, trials = read_results(exp), read_trials(exp)
    assert len(trials) == 7
    assert set(rows["node_ip"]) == {"127.0.0.1"}  # the embedded Ray stayed on loopback

    # every result a trial reported is one row, none twice; Ray's own per-trial logs give the count
    reported = 0
    for progress in exp.glob("train_trial_*/progress.csv"):
        reported += len(pd.read_csv(progress))
    assert len(rows) == reported == trials["iterations"].sum()
    assert not rows.duplicated(["trial_id", "training_iteration"]).any()
    for trial_id, group in rows.groupby("trial_id"):
        assert sorted(group["training_iteration"]) == list(range(1, len(group) + 1))

    # the baselines ran as trials, with exactly their weights
    weights = trials[list(WEIGHT_COLUMNS)]
    published = pd.Series({f"config.{k}": v for k, v in PUBLISHED.items()})[list(WEIGHT_COLUMNS)]
    is_published = (weights.sub(published.values).abs() < 1e-12).all(axis=1)
    assert (is_published & (trials["config.optim.lr"] == 0.0003)).sum() == 1
    assert ((trials["config.loss.w1_laplacian"] == 0.5) & (trials["config.loss.w2_laplacian"] == 0.5)
            & (trials["config.optim.lr"] == 0.0003)).sum() >= 1

    # the diverging baseline errored with the reason and is never best; the search still finished
    diverged = trials[trials["config.optim.lr"] == 1e6]
    assert len(diverged) >= 1
    assert (diverged["stop_reason"] == STOP_ERRORED).all()
    assert diverged["error"].str.contains("NonFiniteLossError: loss became nan").all()
    ok = trials[trials["stop_reason"] != STOP_ERRORED]
    assert set(ok["stop_reason"]) <= {STOP_COMPLETED, STOP_EARLY} and (ok["stop_reason"] == STOP_EARLY).any()
    # ASHA stopped searched trials, never a baseline: both ran to max_t
    assert (trials.loc[trials["baseline"].isin(["published", "uniform"]), "stop_reason"] == STOP_COMPLETED).all()
    best = trials.sort_values(BEST_OBJECTIVE).iloc[0]
    assert best["config.optim.lr"] == 0.0003
    assert (ok[BEST_OBJECTIVE] == rows[rows.trial_id.isin(ok.trial_id)].groupby("trial_id")[OBJECTIVE].min()
            .reindex(ok.trial_id).values).all()

    # Optuna saw ASHA's stops as PRUNED, the full-length trials as COMPLETE, the NaN trial as FAIL
    study = _study(exp)
    states = sorted(t.state.name for t in study.trials)
    expected = sorted({STOP_COMPLETED: "COMPLETE", STOP_EARLY: "PRUNED", STOP_ERRORED: "FAIL"}[r]
                      for r in trials["stop_reason"])
    assert states == expected
    for t in study.trials:
        if t.state.name in ("COMPLETE", "PRUNED"):
            same = pd.Series(True, index=trials.index)
            for key, value in t.params.items():
                same &= trials[f"config.{key}"] == value
            match = trials[same]
            assert len(match) >= 1
            # every epoch the trial reached, told once, with the values of its rows in the Parquet table
            epochs = int(match["iterations"].iloc[0])
            assert sorted(t.intermediate_values) == list(range(1, epochs + 1)), t.intermediate_values
            told = rows[rows.trial_id == match["trial_id"].iloc[0]].set_index("training_iteration")[OBJECTIVE]
            assert all(abs(told[e] - v) <= 1e-6 * abs(v) for e, v in t.intermediate_values.items())
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert complete and all(sorted(t.intermediate_values) == [1, 2, 3] for t in complete)
    json.dumps(rows.iloc[0].to_dict(), default=str)  # rows are plain values

    # train-best retrains the best completed trial at the same budget on seeds the search never used (the base seed
    # + 2000, + 2001), then the baselines with the same seeds (not the one that diverged in the search)
    result = p2m_run("search", "train-best", exp, "--seeds", 2, "--previews", 1, "--with-baselines", "--quiet",
                     env=ray_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "baseline diverges: not retrained, it errored in the search" in result.stdout
    done = trials[trials["stop_reason"] == STOP_COMPLETED]
    chosen = done.sort_values(LAST_OBJECTIVE).iloc[0]
    assert set(trials["config.seed"]) == {0}  # every trial of the search trained with the base seed
    seeds = [2000, 2001]
    rivals = [b for b in ("published", "uniform") if b != chosen["baseline"]]  # a baseline may be the best
    for arm in ["train_best"] + [f"train_best_{b}" for b in rivals]:
        per_seed = pd.read_parquet(exp / arm / "views.parquet").groupby("seed").size()  # every test view, each seed
        assert per_seed.index.tolist() == seeds and per_seed.nunique() == 1 and per_seed.iloc[0] > 0
    best = pd.read_parquet(exp / "train_best" / "results.parquet")
    assert best["trial_id"].tolist() == [chosen["trial_id"]] * 2 and best["seed"].tolist() == seeds
    # the chosen trial's configuration, seed aside, at the search's budget (on fresh seeds its figure is a new draw,
    # not the search's: the row keeps the search's beside it)
    assert (best["epochs"] == 3).all() and (best["config.optim.max_epochs"] == 3).all()
    for column in [c for c in trials.columns if c.startswith("config.") and c != "config.seed"]:
        assert all(_same(value, chosen[column]) for value in best[column]), column
    assert best["trial_last_val_s3_cd"].tolist() == [chosen[LAST_OBJECTIVE]] * 2
    assert best[OBJECTIVE].gt(0).all() and best[OBJECTIVE].lt(float("inf")).all()
    assert (best["test_views"] > 0).all() and (best["test_s3_cd"] > 0).all() and len(best) == 2
    assert len(list((exp / "train_best" / "seed2000" / "previews").glob("*.png"))) == 1

    # retention (keep_best 3): the baselines and the 3 best ended trials keep their last checkpoint, a final one at
    # max_t; the other ended trials keep none (the errored trial never wrote one: NaN at its first step). A retrained
    # run keeps no checkpoint: its weights are in its outputs
    for trial_id in check_retention(exp, trials):
        [left] = next(exp.glob(f"train_trial_*{trial_id}*")).glob("checkpoint_*/checkpoint.pt")
        if trials.set_index("trial_id").loc[trial_id, "stop_reason"] == STOP_COMPLETED:
            assert "optimizer" not in torch.load(left, weights_only=True)
    assert not list((exp / "runs").glob("*/*/checkpoint_*"))
    image = sorted(synth_dir.glob("*/*/rendering/00.png"))[0]
    [best_checkpoint] = next(exp.glob(f"train_trial_*{chosen['trial_id']}*")).glob("checkpoint_*")
    for checkpoint in (best_checkpoint, exp / "train_best" / "seed2000"):
        result = p2m_run("predict", "--checkpoint", checkpoint, image, "--out", tmp_path / "mesh.obj", env=ray_env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert (tmp_path / "mesh.obj").stat().st_size > 0
        (tmp_path / "mesh.obj").unlink()

    # the baseline column names exactly the enqueued points
    named = trials.set_index("trial_id")["baseline"]
    assert named[(is_published & (trials["config.optim.lr"] == 0.0003)).values].tolist() == ["published"]
    assert set(named.dropna()) == {"published", "uniform", "diverges"}
    assert trials.loc[trials["baseline"] == "diverges", "config.optim.lr"].tolist() == [1e6]
    in_rows = rows.groupby("trial_id")["baseline"].first()  # trials that reported (not the diverging one)
    assert in_rows.equals(named.reindex(in_rows.index))

    # short trial directories: the trainable, the trial id and a baseline's name; a retrained run's, its arm and seed
    assert sorted(p.name for p in exp.glob("train_trial_*")) == sorted(
        f"train_trial_{trial_id}" + (f"_{name}" if isinstance(name, str) else "") for trial_id, name in named.items())
    runs = [re.fullmatch(r"train_run_[0-9a-f]+_\d{5}_(\w+)_seed(\d+)", p.name) for p in exp.glob("runs/*/train_run_*")]
    assert runs and all(runs), [p.name for p in exp.glob("runs/*/*")]
    assert {(m[1], int(m[2])) for m in runs} >= {(arm, seed) for arm in [BEST_ARM, *rivals] for seed in seeds}

    # trials that reached max_t saved previews of their meshes
    for trial_id in done["trial_id"]:
        assert len(list((exp / "previews" / trial_id / "previews").glob("*.png"))) == 2

    # the analysis of this real search: every table against a direct pandas computation
    result = p2m_run("results", "analyze", exp, "--format", "json", env=ray_env)
    assert result.returncode == 0, result.stderr[-3000:]
    tables = {name: pd.DataFrame(records) for name, records in json.loads(result.stdout).items()}
    check_analysis(tables, rows, trials, max_t=3, rungs=[1, 2])
    report = (exp / "analysis" / "report.md").read_text()
    # the report opens with the verdict: best against each retrained baseline, with intervals over 2 seeds
    assert report.index("## Verdict") < report.index("## Summary") < report.index("## Appendix")
    changes = tables["verdict_changes"]
    assert set(changes["baseline"]) == set(rivals) | {"diverges"}
    retrained = changes[changes["baseline"].isin(rivals)]
    assert retrained["source"].str.startswith("test, 2 fresh seeds").all() and retrained["low"].notna().all()
    assert f"Meshes of t's best trial {chosen['trial_id']}" in report
    assert len(list((exp / "analysis").glob("*.png"))) == 6


def _same(a, b) -> bool:
    """Two cells of a config column are the same value (lists come back from Parquet as arrays; NaN is NaN)."""
    if isinstance(a, (list, tuple, np.ndarray)) or isinstance(b, (list, tuple, np.ndarray)):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b or (pd.isna(a) and pd.isna(b))


def check_analysis(tables, rows, trials, max_t, rungs):
    """The analysis tables recomputed here with plain pandas, from the Parquet rows and the trials table."""
    last = rows.sort_values("training_iteration").groupby("trial_id").last()
    iters = trials.set_index("trial_id")["iterations"]
    reason = trials.set_index("trial_id")["stop_reason"]

    milestones = [0, *rungs, max_t]
    rung = tables["rungs"]
    assert rung["epoch"].tolist() == milestones
    for i, m in enumerate(milestones):
        nxt = milestones[i + 1] if i + 1 < len(milestones) else 10 ** 9
        entered = iters[iters >= m].index
        leaving = iters[(iters >= m) & (iters < nxt)].index
        r = rung.iloc[i]
        assert r["entered"] == len(entered)
        assert r["stopped_early"] == (reason[leaving] == "stopped_early").sum()
        assert r["errored"] == (reason[leaving] == "errored").sum()
        at = rows.loc[rows["training_iteration"] == m, "val_s3_cd_x1000"]
        if len(at):
            assert r["best_cd_x1000"] == pytest.approx(at.min()) and r["median_cd_x1000"] == pytest.approx(at.median())
    assert rung.iloc[-1]["completed"] == (reason == "completed").sum()

    cost = tables["cost"].iloc[0]
    seconds = last["time_total_s"].reindex(iters.index).fillna(0)
    assert cost["trial_epochs"] == len(rows) == iters.sum()
    assert cost["trial_hours"] == pytest.approx(seconds.sum() / 3600)
    errored = reason == "errored"
    per_epoch = (seconds / iters.where(iters > 0)).fillna(0)
    full = seconds[errored].sum() + (per_epoch[~errored] * max_t).sum()
    assert cost["no_stopping_hours"] == pytest.approx(full / 3600)
    assert cost["no_stopping_epochs"] == iters[errored].sum() + max_t * (~errored).sum()

    board = tables["leaderboard"]
    done = last[reason.reindex(last.index) == "completed"].sort_values("val_s3_cd")
    assert board["trial_id"].tolist()[:len(done)] == done.index.tolist()
    for col in ("val_s1_cd_x1000", "val_s2_cd_x1000", "val_s3_cd_x1000", "val_s3_f_tau", "val_s3_f_2tau"):
        got = board.set_index("trial_id")[col].dropna()
        assert got.to_numpy() == pytest.approx(last.loc[got.index, col].to_numpy())
    for col in WEIGHT_COLUMNS:
        got = board.set_index("trial_id")[col.rsplit(".", 1)[-1]]
        assert got.to_numpy() == pytest.approx(trials.set_index("trial_id").loc[got.index, col].to_numpy())

    best = done.index[0]
    comp = tables["comparison"].iloc[0]
    assert comp["best_trial"] == best and comp["best_cd_x1000"] == pytest.approx(1000 * done["val_s3_cd"].iloc[0])
    assert comp["trials"] == len(trials) and comp["completed"] == len(done)

    indexed = rows.set_index(["trial_id", "training_iteration"])
    vs = tables["baselines_vs_best"]
    assert len(vs) == 15 * len(set(vs["baseline_trial"]))
    for _, r in vs.iterrows():
        assert r["best_trial"] == best
        assert r["epoch"] == min(iters[r["baseline_trial"]], iters[best])
        col = f"val_s{r['stage']}_{r['metric']}"
        b, v = indexed.loc[(r["baseline_trial"], r["epoch"]), col], indexed.loc[(best, r["epoch"]), col]
        assert (r["baseline_value"], r["best_value"]) == pytest.approx((b, v))
        assert r["change"] == pytest.approx(v / b - 1)

    imp = tables["importance"]
    if len(done) >= 3:
        assert (imp["trials"] == len(done)).all() and imp["fanova"].sum() == pytest.approx(1.0)
    else:
        assert imp.empty


def test_smoke_test_runs_in_seconds_on_data_it_makes(tmp_path, ray_env, p2m_run, s3, s3_bucket):
    """The smoke test as a new user on a cloud cluster tries it: experiments on s3:// (the test's S3 server), the
    data it makes in this machine's cache, nothing in a local directory named after the URI."""
    storage_path = f"s3://{s3_bucket}/smoke-exp"
    env = {**ray_env, **s3, "P2M_CACHE_DIR": str(tmp_path / "cache")}
    result = p2m_run("search", "launch", "--smoke-test", "--quiet", "--storage-path", storage_path,
                     "--name", "smoke", env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "leaderboard: 2 trials" in result.stdout and "race" not in result.stdout  # seconds: no race after it
    trials = read_trials(f"{storage_path}/smoke")
    # ASHA may stop the second trial at its first rung (epoch 1); the first to get there always goes on
    assert (trials["status"] == "TERMINATED").all() and (trials["config.profile"] == "tiny").all(), trials.T
    assert (trials["stop_reason"] == STOP_COMPLETED).sum() >= 1 and set(trials["iterations"]) <= {1, 2}
    assert list((tmp_path / "cache" / "smoke-data").glob("*/synth_meta.json"))
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_baselines_beside_a_two_objective_search(synth_dir, tmp_path, ray_env, search_yaml, p2m_run):
    """The seed reimplementation's loss (zeros, 100s, 4096 points, other forms) and learned weighting run as
    trials with exactly their config, are named in both tables, and never enter the Optuna study; the study
    has two objectives, the analysis draws their front, and train-best retrains the trial a rule picks."""
    objectives = ["val_s3_cd", "val_s3_normal_consistency"]
    cfg = search_yaml(tmp_path / "s.yaml", synth_dir, tmp_path / "exp", search={"num_samples": 5, "objectives": objectives},
                      baselines={"seed": {}, "learned": {}},  # beside published and uniform
                      scheduler={"type": "fifo", "max_t": 2})
    result = p2m_run("search", "launch", "--config", cfg, "--quiet", env=ray_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    exp = tmp_path / "exp" / "t"
    rows, trials = read_results(exp), read_trials(exp)
    assert sorted(trials["baseline"].dropna()) == ["learned", "published", "seed", "uniform"] and len(trials) == 5
    assert (trials["stop_reason"] == STOP_COMPLETED).all(), trials[["baseline", "stop_reason", "error"]]
    seed = trials[trials["baseline"] == "seed"].iloc[0]
    assert [seed[f"config.loss.w1_{t}"] for t in ("chamfer", "normal", "laplacian", "edge")] == [1, 0, 100, 100]
    assert all(seed[f"config.loss.w{s}_{t}"] == 0 for s in (2, 3) for t in ("chamfer", "normal", "laplacian", "edge"))
    assert (seed["config.data.gt_samples"], seed["config.loss.normal_form"]) == (4096, "vertex")
    # the learned trial logged its three weights every epoch; no other trial has them
    learned = [f"learned_w{s}_chamfer" for s in (1, 2, 3)]
    is_learned = rows["baseline"] == "learned"
    assert rows.loc[is_learned, learned].notna().all().all() and is_learned.sum() == 2
    assert rows.loc[~is_learned, learned].isna().all().all()
    # the study holds the two baselines of the space and the searched trial only, each COMPLETE with both values
    study = _study(exp)
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials)
    published = {k: v for k, v in study.trials[0].params.items() if k in PUBLISHED}
    assert published == {k: PUBLISHED[k] for k in published} and len(published) >= 11  # the first: published
    by_config = trials.set_index("baseline")
    assert study.trials[0].values == pytest.approx([by_config.loc["published", f"last.{c}"] for c in objectives])

    result = p2m_run("results", "analyze", exp, "--format", "json", env=ray_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (exp / "analysis" / "tradeoff.png").stat().st_size > 10_000
    rule = "min val_s3_cd where val_s3_normal_consistency >= published"
    chosen = pick_on_front(trials, rule, dict(zip(objectives, ["min", "max"])))
    result = p2m_run("search", "train-best", exp, "--pick", rule, "--seeds", 1, "--epochs", 1, "--previews", 0,
                     "--quiet", env=ray_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"best: trial {chosen['trial_id']}, picked by {rule!r}" in result.stdout
    assert pd.read_parquet(exp / "train_best" / "results.parquet")["trial_id"].tolist() == [chosen["trial_id"]]
