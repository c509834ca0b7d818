"""`p2m results analyze` on hand-made experiments: every table against hand-computed values or a direct
pandas computation, importance against a known cause, bad input, partial searches, the CLI formats."""
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from optuna.distributions import CategoricalDistribution, FloatDistribution

from p2m.names import METRICS, SETTINGS_FILE, STAGES, val_column
from results.analysis.experiment import load_experiment
from results.analysis.importance import importance, rebuild_study
from results.analysis.pareto import front, pareto_mask, pick_on_front
from results.trials import lineage
from results.analysis.report import analyze, format_tables, markdown_table
from results.schema import SAMPLE_COLUMNS, WEIGHT_COLUMNS
from results.settings import SearchSettings
from results.space import write_space
from results.parquet import ResultsError, ResultsWriter, read_results, write_trials
from results.analysis.tables import anytime, baselines_vs_best, comparison, cost_table, leaderboard, rung_table

MAX_T = 4
# trial: (baseline, stop reason, Ray status, stage-3 CD x 1000 per epoch, seconds per epoch)
TRIALS = {
    "a": (None, "completed", "TERMINATED", [20, 16, 13, 12], 10.0),
    "b": ("published", "completed", "TERMINATED", [21, 18, 15, 14], 12.0),
    "c": (None, "stopped_early", "TERMINATED", [19, 17], 8.0),
    "d": ("uniform", "stopped_early", "TERMINATED", [22], 9.0),
    "e": (None, "errored", "ERROR", [25], 5.0),
    "f": (None, "errored", "ERROR", [], 0.0),  # failed before its first epoch: no result row
}
# the order results arrived in (trial, epoch)
ARRIVALS = [("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 1), ("a", 2), ("b", 2), ("c", 2), ("a", 3), ("b", 3),
            ("b", 4), ("a", 4)]
T0 = 1_800_000_000


def _metric(trial, epoch, stage, metric, trials=TRIALS):
    """A deterministic, distinct value for every metric; stage-3 CD from the trials' table."""
    cd3 = trials[trial][3][epoch - 1]
    if metric in ("cd", "cd_x1000"):
        x = cd3 + 3 * (3 - stage) + 0.1 * epoch
        return x / 1000 if metric == "cd" else x
    return (sum(map(ord, trial)) * 7 + epoch * 3 + stage * 11 + len(metric)) % 97 / 10


def _weights(trial):
    rng = np.random.default_rng(sum(map(ord, trial)))
    return {c: float(10 ** rng.uniform(-2, 0.5)) for c in WEIGHT_COLUMNS} | {
        SAMPLE_COLUMNS[0]: int(rng.choice([500, 1000])), **{c: 0 for c in SAMPLE_COLUMNS[1:]}}


# the space the hand-made searches "searched": every weight log-uniform over the range _weights draws from
SPACE = {c[len("config."):]: FloatDistribution(10 ** -2, 10 ** 0.5, log=True) for c in WEIGHT_COLUMNS} | {
    SAMPLE_COLUMNS[0][len("config."):]: CategoricalDistribution([500, 1000]),
    **{c[len("config."):]: CategoricalDistribution([0, 1000]) for c in SAMPLE_COLUMNS[1:]}}


def make_experiment(root, trials=TRIALS, arrivals=ARRIVALS, write_trials_table=True, settings=True):
    exp = root / "exp1"
    writer = ResultsWriter(exp)
    elapsed = {t: 0.0 for t in trials}
    clock = T0
    for trial, epoch in arrivals:
        seconds = trials[trial][4]
        elapsed[trial] += seconds
        clock += 7
        row = {"experiment": "handmade", "trial_id": trial, "training_iteration": epoch, "epoch": epoch,
               "time_total_s": elapsed[trial], "time_this_iter_s": seconds, "timestamp": clock,
               "baseline": trials[trial][0], **_weights(trial)}
        for s in STAGES:
            for m in METRICS:
                row[val_column(s, m)] = _metric(trial, epoch, s, m, trials)
        writer.append(row)
    if write_trials_table:
        write_trials(exp, [{"experiment": "handmade", "trial_id": t, "status": status, "stop_reason": reason,
                            "error": "boom" if reason == "errored" else None, "iterations": len(cds),
                            "baseline": baseline, **_weights(t)}
                           for t, (baseline, reason, status, cds, _) in trials.items()])
    if settings:  # what launch records: ASHA's milestones for grace 1, factor 2, max_t 4 are 1, 2, 4
        record = SearchSettings(name="handmade", scheduler="asha", algorithm="tpe", max_t=MAX_T, grace_period=1,
                                reduction_factor=2.0, rungs=(1.0, 2.0, 4.0), cpu=2.0, gpu=0.5,
                                num_samples=len(trials))
        (exp / SETTINGS_FILE).write_text(yaml.safe_dump({**record.to_dict(), "base": {"profile": "tiny"}}))
        write_space(exp, SPACE)
    return exp


@pytest.fixture
def exp(tmp_path):
    return load_experiment(make_experiment(tmp_path))


def test_rung_table_by_hand(exp):
    got = rung_table(exp)
    expected = pd.DataFrame({
        "milestone": ["start", "rung 1", "rung 2", "max_t"], "epoch": [0, 1, 2, 4], "entered": [6, 5, 3, 2],
        "stopped_early": [0, 1, 1, 0], "errored": [1, 1, 0, 0], "unfinished": [0, 0, 0, 0],
        "continued": [5, 3, 2, 0], "completed": [0, 0, 0, 2],
        "best_cd_x1000": [np.nan, 19.1, 16.2, 12.4], "median_cd_x1000": [np.nan, 21.1, 17.2, 13.4]})
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_cost_table_by_hand(exp):
    got = cost_table(exp).iloc[0]
    seconds, no_stop = 40 + 48 + 16 + 9 + 5, 40 + 48 + 4 * 8 + 4 * 9 + 5
    assert got["trials"] == 6 and got["trial_epochs"] == 12 and got["no_stopping_epochs"] == 17
    assert got["epochs_saved_share"] == pytest.approx(1 - 12 / 17)
    assert got["trial_hours"] == pytest.approx(seconds / 3600)
    assert got["cpu_hours"] == pytest.approx(2 * seconds / 3600)
    assert got["gpu_hours"] == pytest.approx(0.5 * seconds / 3600)
    assert got["no_stopping_hours"] == pytest.approx(no_stop / 3600)
    assert got["hours_saved_share"] == pytest.approx(1 - seconds / no_stop)
    # first result at T0+7 after a 10 s epoch, last at T0+7*12
    assert got["wall_hours"] == pytest.approx((7 * 12 - (7 - 10)) / 3600)


def test_leaderboard_ranks_finished_trials_first_and_shows_their_last_epoch(exp, tmp_path):
    board = leaderboard(exp, top=10)
    assert board["trial_id"].tolist() == ["a", "b", "c", "d", "e", "f"]
    assert board["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    assert board["epochs"].tolist() == [4, 4, 2, 1, 1, 0]
    assert [b if isinstance(b, str) else None for b in board["baseline"]] == [None, "published", None, "uniform",
                                                                              None, None]
    rows = exp.results
    last = rows.sort_values("training_iteration").groupby("trial_id").last()
    for col in [val_column(s, m) for s in STAGES for m in ("cd_x1000", "f_tau", "f_2tau", "normal_consistency",
                                                           "smoothness")]:
        expected = last[col].reindex(board["trial_id"]).to_numpy()
        np.testing.assert_allclose(board[col].to_numpy(dtype=float), expected, equal_nan=True)
    for trial in "abcdef":
        weights = _weights(trial)
        got = board.set_index("trial_id").loc[trial]
        for col, value in weights.items():
            assert got[col.rsplit(".", 1)[-1]] == pytest.approx(value)
    assert leaderboard(exp, top=2)["trial_id"].tolist() == ["a", "b"]


def test_baselines_against_the_best_at_the_same_epoch(exp):
    vs = baselines_vs_best(exp)
    assert set(vs["best_trial"]) == {"a"}
    assert len(vs) == 2 * 3 * 5
    for _, r in vs.iterrows():
        epoch = {"b": 4, "d": 1}[r["baseline_trial"]]
        assert r["epoch"] == epoch
        b = _metric(r["baseline_trial"], epoch, r["stage"], r["metric"])
        v = _metric("a", epoch, r["stage"], r["metric"])
        assert r["baseline_value"] == pytest.approx(b) and r["best_value"] == pytest.approx(v)
        assert r["change"] == pytest.approx(v / b - 1)
        lower_better = r["metric"] in ("cd_x1000", "smoothness")
        assert r["improved"] == (v < b if lower_better else v > b)
    s3 = vs[(vs["stage"] == 3) & (vs["metric"] == "cd_x1000")].set_index("baseline")
    assert s3.loc["published", "change"] == pytest.approx(12.4 / 14.4 - 1)
    assert s3.loc["uniform", "change"] == pytest.approx(20.1 / 22.1 - 1)


def test_anytime_and_comparison_by_hand(exp):
    curve = anytime(exp)
    assert curve["trial_epochs"].tolist() == list(range(1, 13))
    assert curve["trial_id"].tolist() == [t for t, _ in ARRIVALS]
    # a finished trial first arrives 11th (b: 14.4), then a (12.4)
    assert curve["best_cd_x1000"].isna().sum() == 10
    assert curve["best_cd_x1000"].tolist()[10:] == pytest.approx([14.4, 12.4])
    comp = comparison([exp]).iloc[0]
    assert (comp["trials"], comp["completed"], comp["stopped_early"], comp["errored"], comp["unfinished"]) == \
        (6, 2, 2, 2, 0)
    assert comp["best_trial"] == "a" and comp["best_cd_x1000"] == pytest.approx(12.4)
    assert comp["epochs_to_within_2pct"] == 12 and comp["trial_epochs"] == 12 and not comp["partial"]


def test_importance_finds_the_weight_that_drives_cd(tmp_path):
    rng = np.random.default_rng(0)
    trials, arrivals = {}, []
    for i in range(40):
        tid = f"t{i:02d}"
        trials[tid] = (None, "completed", "TERMINATED", [0.0] * MAX_T, 1.0)
        arrivals += [(tid, e) for e in range(1, MAX_T + 1)]
    exp_dir = make_experiment(tmp_path, trials, arrivals)
    # rewrite the rows: the last epoch's CD is driven by w1_edge alone, plus a little noise
    rows = read_results(exp_dir)
    rows["config.loss.w1_edge"] = rows["trial_id"].map({t: float(10 ** rng.uniform(-2, 0)) for t in trials})
    for col in WEIGHT_COLUMNS[2:]:
        rows[col] = rows["trial_id"].map({t: float(10 ** rng.uniform(-2, 0)) for t in trials})
    rows["config.loss.w1_chamfer"] = 1.0
    rows["val_s3_cd"] = 0.01 * (3 + np.log10(rows["config.loss.w1_edge"])) + rng.normal(0, 1e-4, len(rows))
    for path in (exp_dir / "results").glob("*.parquet"):
        path.unlink()
    rows.to_parquet(exp_dir / "results" / "part-0-0.parquet")
    (exp_dir / "trials.parquet").unlink()
    exp = load_experiment(exp_dir)
    study = rebuild_study(exp)
    last = rows[rows["training_iteration"] == MAX_T].set_index("trial_id")
    assert len(study.trials) == 40
    for t in study.trials:
        tid = t.user_attrs["trial_id"]
        assert t.value == pytest.approx(last.loc[tid, "val_s3_cd"])
        assert t.params["loss.w1_edge"] == pytest.approx(last.loc[tid, "config.loss.w1_edge"])
    # w1_chamfer is constant here (as the anchor would be): not a parameter of the study
    assert "loss.w1_chamfer" not in study.trials[0].params and "loss.w3_normal" in study.trials[0].params
    table, failures = importance(exp)
    assert not failures
    assert table["param"].iloc[0] == "w1_edge" and table["fanova"].iloc[0] > 0.5
    assert table.set_index("param")["ped_anova"].idxmax() == "w1_edge"
    assert table["fanova"].sum() == pytest.approx(1.0)
    assert (table["trials"] == 40).all()


def test_importance_needs_finished_trials(exp):
    assert importance(exp).table.empty  # two trials reached max_t: too few
    first = importance(exp, epoch=1).table  # five trials reported epoch 1
    assert (first["trials"] == 5).all() and len(first) > 0


def test_pareto_mask_matches_brute_force_with_mixed_directions_ties_and_nans():
    rng = np.random.default_rng(3)
    pts = np.round(rng.random((80, 2)), 1)  # rounded: many ties
    pts[5, 1] = np.nan
    modes = ["min", "max"]
    got = set(np.flatnonzero(pareto_mask(pts, modes)).tolist())
    signed = pts * np.array([1.0, -1.0])
    brute = {i for i in range(len(pts)) if np.isfinite(pts[i]).all() and not any(
        np.isfinite(pts[j]).all() and (signed[j] <= signed[i]).all() and (signed[j] < signed[i]).any()
        for j in range(len(pts)))}
    assert got == brute and 5 not in got and len(got) >= 1


def test_pareto_mask_is_optunas_front_on_a_toy_two_objective_study():
    """Optuna's own multi-objective study (an independent implementation) finds the same front."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(lambda t: (t.suggest_float("x", 0, 1) ** 2, 1 - (t.params["x"] - 0.7) ** 2
                              + 0.1 * t.suggest_float("y", 0, 1)), n_trials=60)
    values = np.array([t.values for t in study.trials])
    assert set(np.flatnonzero(pareto_mask(values, ["min", "max"])).tolist()) == {t.number for t in study.best_trials}


def test_pick_on_front_follows_the_stated_rule():
    cd, nc = "val_s3_cd", "val_s3_normal_consistency"
    trials = pd.DataFrame({
        "trial_id": list("abcdefg"),
        "baseline": [None, None, None, None, "published", "seed", None],
        "stop_reason": ["completed"] * 6 + ["stopped_early"],
        f"last.{cd}": [1.0, 2.0, 3.0, 2.5, 2.2, 4.0, 0.1],
        f"last.{nc}": [0.60, 0.70, 0.80, 0.65, 0.66, 0.50, 0.99],
    })
    objectives = {cd: "min", nc: "max"}
    table = front(trials, objectives)
    assert table.loc[table["on_front"], "trial_id"].tolist() == ["a", "b", "c"]  # g stopped early: not a candidate
    pick = lambda rule: pick_on_front(trials, rule, objectives)["trial_id"]  # noqa: E731
    assert pick(f"min {cd}") == "a"
    assert pick(f"min {cd} where {nc} >= published") == "b"  # published: 0.66
    assert pick(f"max {nc} where {cd} <= 2.0") == "b"
    for rule, message in ((f"min {cd} where {nc} >= 0.9", "no trial on the front"),
                          (f"min {cd} where {nc} >= mine", "'mine' is neither a number nor a baseline"),
                          ("lowest cd", "expected 'min|max METRIC"), (f"min val_s9_cd", "not a validation metric")):
        with pytest.raises(ResultsError, match=message):
            pick(rule)


def test_analyze_writes_tables_pictures_and_report(exp, tmp_path):
    analysis = analyze([exp.dir], tmp_path / "out")
    for name, table in analysis.tables.items():
        back = pd.read_csv(tmp_path / "out" / "tables" / f"{name}.csv")
        assert len(back) == len(table)
    assert set(analysis.pictures) >= {"learning_curves", "importance", "parallel_coordinates", "stage_cd",
                                      "tradeoff", "anytime"}
    for path in analysis.pictures.values():
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
    report = (tmp_path / "out" / "report.md").read_text()
    for picture in analysis.pictures.values():
        assert f"]({picture.name})" in report
    assert "| a |" in report and "published" in report
    assert "No previews of handmade's best trial a" in report


def test_two_experiments_side_by_side(tmp_path):
    one = make_experiment(tmp_path / "x")
    two = make_experiment(tmp_path / "y", {k: v for k, v in TRIALS.items() if k in "abc"},
                          [a for a in ARRIVALS if a[0] in "abc"])
    analysis = analyze([one, two], tmp_path / "cmp")
    comp = analysis.tables["comparison"]
    assert comp["experiment"].tolist() == ["x/exp1", "y/exp1"]  # same name: told apart by directory
    assert comp["trials"].tolist() == [6, 3] and comp["trial_epochs"].tolist() == [12, 10]
    assert set(analysis.tables["leaderboard"]["experiment"]) == {"x/exp1", "y/exp1"}
    assert "parallel_coordinates_x_exp1" in analysis.pictures


def test_partial_experiment_is_analysed_and_says_so(tmp_path):
    # the driver died: no trials table, and trial b's last epoch never arrived
    arrivals = [a for a in ARRIVALS if a != ("b", 4)]
    exp = load_experiment(make_experiment(tmp_path, arrivals=arrivals, write_trials_table=False))
    assert exp.partial and any("trials.parquet" in n for n in exp.notes)
    reasons = exp.trials.set_index("trial_id")["stop_reason"].to_dict()
    assert reasons == {"a": "completed", "b": "unfinished", "c": "unfinished", "d": "unfinished",
                       "e": "unfinished"}  # f never reported: unknown to the rows
    assert any("unfinished" in n for n in exp.notes)
    analysis = analyze([exp.dir], tmp_path / "out")
    assert "Partial results" in analysis.report.read_text()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "p2m.cli", "results", "analyze", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_cli_json_matches_the_tables(exp, tmp_path):
    result = _cli(exp.dir, "--format", "json", "--out", tmp_path / "o", "--no-plots")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"comparison", "leaderboard", "baselines_vs_best", "rungs", "importance",
                         "importance_first_rung", "cost", "verdict_changes", "fidelity"}
    rungs = pd.DataFrame(data["rungs"])
    assert rungs["entered"].tolist() == [6, 5, 3, 2] and rungs["continued"].tolist() == [5, 3, 2, 0]
    assert data["cost"][0]["trial_epochs"] == 12
    assert [r["trial_id"] for r in data["leaderboard"]] == list("abcdef")
    assert not list((tmp_path / "o").glob("*.png"))


def test_cli_text_markdown_csv(exp, tmp_path):
    text = _cli(exp.dir, "--out", tmp_path / "o1", "--no-plots")
    assert text.returncode == 0 and "handmade: 6 trials (2 reached max_t=4" in text.stdout
    assert "vs baseline published at epoch 4: stage-3 CD 14.400 -> 12.400 (-13.9%)" in text.stdout
    md = _cli(exp.dir, "--format", "markdown", "--out", tmp_path / "o2", "--no-plots")
    assert "### rungs" in md.stdout and "| experiment | milestone |" in md.stdout
    csv = _cli(exp.dir, "--format", "csv", "--out", tmp_path / "o3", "--no-plots")
    block = csv.stdout.split("# rungs\n")[1].split("\n\n")[0]
    assert pd.read_csv(pd.io.common.StringIO(block))["stopped_early"].tolist() == [0, 1, 1, 0]


@pytest.mark.parametrize("damage", ["missing", "empty", "corrupt", "no_rows"])
def test_bad_input_is_one_line_and_nonzero(tmp_path, damage):
    exp = make_experiment(tmp_path)
    if damage == "missing":
        exp = tmp_path / "nope"
    elif damage == "empty":
        for p in (exp / "results").glob("*.parquet"):
            p.unlink()
    elif damage == "corrupt":
        next((exp / "results").glob("*.parquet")).write_bytes(b"PAR1 not really")
    else:
        for p in (exp / "results").glob("*.parquet"):
            p.unlink()
        pd.DataFrame({"trial_id": pd.Series([], dtype=str), "training_iteration": pd.Series([], dtype=int)}
                     ).to_parquet(exp / "results" / "part-0-0.parquet")
    result = _cli(exp, "--out", tmp_path / "out")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("p2m: error: ") and str(exp) in lines[0]
    assert not (tmp_path / "out" / "report.md").exists()


def test_load_experiment_errors_name_the_path(tmp_path):
    with pytest.raises(ResultsError, match="no such experiment directory"):
        load_experiment(tmp_path / "missing")
    exp = make_experiment(tmp_path)
    (exp / "space.json").write_text("{not json")
    with pytest.raises(ResultsError, match="space.json"):
        load_experiment(exp)


def test_markdown_and_text_formats_render_every_cell(exp):
    table = rung_table(exp)
    md = markdown_table(table)
    assert md.count("\n") == len(table) + 1 and "| rung 1 | 1 | 5 |" in md
    assert math.isclose(float(format_tables({"r": table}, "csv").splitlines()[4].split(",")[-2]), 16.2)
    with pytest.raises(ValueError, match="--format"):
        format_tables({"r": table}, "xml")


def test_the_command_loads_neither_torch_nor_ray(exp, tmp_path):
    code = ("import sys; from p2m.cli import main; "
            f"rc = main(['results', 'analyze', {str(exp.dir)!r}, '--out', {str(tmp_path / 'o')!r}, '--no-plots']); "
            "print(rc, 'torch' in sys.modules, 'ray' in sys.modules, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stderr.strip().splitlines()[-1] == "0 False False"


def test_rung_epochs_are_the_recorded_milestones_rounded_up():
    """A trial meets ASHA's milestone m at the first epoch >= m (Ray compares iteration >= milestone)."""
    settings = SearchSettings(max_t=8, reduction_factor=2.5, rungs=(1.0, 2.5, 6.25))
    assert settings.rung_epochs() == [1, 3, 7]
    assert SearchSettings(max_t=4, rungs=(4.0, 1.0, 2.0)).rung_epochs() == [1, 2]  # max_t itself decides nothing
    assert SearchSettings(scheduler="fifo").rung_epochs() == []


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("rungs"), "missing field 'rungs'"),
    (lambda d: d.update(max_tt=4), "unknown field 'max_tt'"),
    (lambda d: d.update(max_t="4"), "max_t: expected an integer, got '4'"),
    (lambda d: d.update(grace_period=9), r"grace_period \(9\) exceeds scheduler.max_t \(4\)"),
])
def test_settings_are_read_strictly_and_errors_name_file_and_field(tmp_path, change, message):
    exp = make_experiment(tmp_path)
    data = yaml.safe_load((exp / SETTINGS_FILE).read_text())
    change(data)
    (exp / SETTINGS_FILE).write_text(yaml.safe_dump(data))
    with pytest.raises(ResultsError, match=message) as err:
        load_experiment(exp)
    assert str(err.value).startswith(str(exp / SETTINGS_FILE)) and "\n" not in str(err.value)
    result = _cli(exp, "--out", tmp_path / "out")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_space_is_read_back_exactly(exp):
    """The study is rebuilt on the search's own distributions, not on ranges guessed from the values seen."""
    assert exp.space == SPACE
    study = rebuild_study(exp, epoch=1)
    for key, dist in study.trials[0].distributions.items():
        assert dist == SPACE[key]


def test_an_importance_evaluator_that_fails_is_named_in_the_report(exp, tmp_path, monkeypatch):
    import optuna

    def boom(self, study, params=None, *, target=None):
        raise RuntimeError("boom at the evaluator")

    monkeypatch.setattr(optuna.importance.PedAnovaImportanceEvaluator, "evaluate", boom)
    table, failures = importance(exp, epoch=1)
    assert failures == {"ped_anova": "RuntimeError: boom at the evaluator"}
    assert table["ped_anova"].isna().all() and table["fanova"].notna().all()
    analysis = analyze([exp.dir], tmp_path / "out", plots_too=False)
    text = analysis.report.read_text()
    assert "ped_anova could not run (RuntimeError: boom at the evaluator)" in text


def test_console_report_and_train_best_rank_alike(tmp_path):
    """Trial "x" had the best single epoch but ended worse than "y": every ranking puts y first."""
    from results.analysis.leaderboard import format_leaderboard
    from results.trials import pick_best

    trials = {"x": (None, "completed", "TERMINATED", [5, 9, 11, 13], 1.0),
              "y": (None, "completed", "TERMINATED", [20, 16, 13, 12], 1.0),
              "z": (None, "stopped_early", "TERMINATED", [4], 1.0)}
    arrivals = [(t, e) for t in trials for e in range(1, len(trials[t][3]) + 1)]
    exp = load_experiment(make_experiment(tmp_path, trials, arrivals))
    console = [line.split()[1] for line in format_leaderboard(exp.trials).splitlines()[2:]]
    assert console == leaderboard(exp)["trial_id"].tolist() == ["y", "x", "z"]
    assert pick_best(exp.trials)["trial_id"] == "y"


def test_lineage_follows_a_model_back_through_the_checkpoints_it_continued():
    """c took b's epoch-2 checkpoint, and b had taken a's epoch-1 one: c's model trained a's epoch 1, b's epoch 2,
    then c's own 3 and 4. A later exploit of a (at epoch 3, into a's epoch 4) is not part of it."""
    rows = pd.DataFrame([
        {"trial_id": t, "training_iteration": e, "parent_trial": p, "parent_epoch": pe, "w": f"{t}{e}"}
        for t, e, p, pe in [("a", 1, None, None), ("a", 2, None, None), ("a", 3, None, None), ("a", 4, "b", 3),
                            ("b", 1, None, None), ("b", 2, "a", 1), ("b", 3, None, None), ("b", 4, None, None),
                            ("c", 1, None, None), ("c", 2, None, None), ("c", 3, "b", 2), ("c", 4, None, None)]])
    assert lineage(rows, "c")["w"].tolist() == ["a1", "b2", "c3", "c4"]
    assert lineage(rows, "a")["w"].tolist() == ["a1", "b2", "b3", "a4"]
    assert lineage(rows, "b")["w"].tolist() == ["a1", "b2", "b3", "b4"]
    assert lineage(rows.drop(columns=["parent_trial", "parent_epoch"]), "c")["w"].tolist() == ["c1", "c2", "c3", "c4"]
