"""The study, third edition (issue 27): does the race's winner beat ``published`` on seeds that chose nothing?

    python benchmarks/study_third_edition.py               # about 45 minutes on 2 cores; resumable
    python benchmarks/study_third_edition.py --smoke-test  # a few minutes: every step once, tiny sizes

Its questions, seeds, family, margin and correction are pre-registered in BENCHMARKS.md ("The study, third
edition"), written before it ran. The steps, each skipped when its output is in ``--work`` (a killed run goes on):

1. Data: a synthetic training set (seed 11, split 70/15/15 by model), a held-out test set (seed 12, one view per
   model) and the 25 real ShapeNet-P2M sample views.
2. One ASHA + TPE search with the five baselines beside it, and its race (``race:`` in its config: the 4 best
   trials and ``published`` on seeds 1000.., judged on validation).
3. ``p2m search train-best`` on seeds 2000..2007: the race's winner and the baselines; the search's single-seed best
   on the same seeds (when it is not the race's winner), as Ray trials of the same machinery.
4. Every verdict run's last checkpoint evaluated view by view on the held-out set and the real views.
5. The statistics (:mod:`results.analysis.paired`, :mod:`results.analysis.noise`): every arm against ``published`` on
   both test sets, three stage-3 metrics, one family of 30, Bonferroni-level intervals and Holm's verdicts; the
   selection regret at 95%; the noise floor. Tables and pictures go to ``--out``; everything printed is also in its
   ``verdict.txt``.
"""
from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _study import EVIDENCE, cpu_name, run, synth_data

from p2m.atomic import atomic_path, atomic_write_bytes
from p2m.names import CHECKPOINT_FILE, OBJECTIVE, RUNS_DIR, SETTINGS_FILE, stage_key
from results.analysis.noise import resolvable_change, seed_sd, seeds_needed
from results.analysis.paired import ALPHA, EQUIVALENCE_MARGINS, compare_arms, decide_family
from results.runs import read_race, read_runs
from results.schema import ARM, BEST_ARM, PHASE_VERDICT, SEED, TRIAL_ID
from results.parquet import read_results, read_trials
from results.trials import pick_best

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent.parent / "shared" / "fixtures" / "shapenet_p2m_sample"
BASELINES = {"published": {}, "seed": {}, "seed_all_stages": {}, "uniform": {"loss.w1_laplacian": 0.5},
             "learned": {}}
COMPARED_BASELINES = ("learned", "seed", "uniform")  # against published (secondary question b)
REFERENCE = "published"
WINNER, SEARCH_BEST = "race_winner", "search_best"
HEADLINE = ("cd_x1000", "f_tau", "normal_consistency")
DATASETS = ("synthetic", "real")
SIZE = {"models": 16, "views": 2, "test_models": 64, "trials": 20, "max_t": 6, "grace": 2, "factor": 2,
        "race_top": 4, "race_seeds": 8, "race_min_rounds": 3, "seeds": 8}
SMOKE = {"models": 3, "views": 2, "test_models": 2, "trials": 6, "max_t": 2, "grace": 1, "factor": 2,
         "race_top": 2, "race_seeds": 3, "race_min_rounds": 2, "seeds": 2}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/p2m-study3e", help="data, experiments, checkpoints (large)")
    parser.add_argument("--out", default=str(EVIDENCE / "study3"), help="tables, verdict and pictures (committed)")
    parser.add_argument("--sample", default=str(SAMPLE), help="the real ShapeNet-P2M views")
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    work, out, size = Path(args.work), Path(args.out), SIZE
    if args.smoke_test:
        work, out, size = work / "smoke", work / "smoke" / "out", SMOKE
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    commit = _git("rev-parse", "HEAD")
    clean = not _git("status", "--porcelain", "--untracked-files=no")
    lines = [f"study, third edition: commit {commit} ({'clean tree' if clean else 'TREE NOT CLEAN'}), {cpu_name()}, "
             f"started {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(start))}"]
    print(lines[0], flush=True)

    data = synth_data(work / "data", size["models"], size["views"], seed=11)
    test = synth_data(work / "test", size["test_models"], 1, seed=12)
    exp = search(work, data, size)
    seeds = retrain(exp, size)
    views = evaluate(exp, seeds, {"synthetic": test, "real": Path(args.sample)}, work / "eval")
    run(["p2m", "results", "analyze", str(exp), "--out", str(work / "analysis")])
    lines += report(exp, views, seeds, size, out, work / "analysis")
    lines.append(f"run time {(time.time() - start) / 60:.1f} min (this invocation; steps done before were skipped)")
    text = "\n".join(lines)
    print("\n".join(lines[1:]))
    atomic_write_bytes(out / "verdict.txt", (text + "\n").encode())
    return 0


def search(work: Path, data: Path, size: dict) -> Path:
    """The ASHA + TPE search and, at its end, its race (the config's ``race:``); resumed when a run was killed."""
    exp = work / "experiments" / "study3"
    if read_race(exp) is not None:
        return exp
    if (exp / SETTINGS_FILE).is_file():
        run(["p2m", "search", "resume", str(exp), "--quiet"])
        return exp
    cfg = {"name": "study3",
           "base": {"profile": "tiny", "data": {"root": str(data)}, "model": {"feature_levels": [1, 2]}},
           "search": {"num_samples": size["trials"], "max_concurrent": 2, "seed": 0, "algorithm": "tpe",
                      "val_per_view": True},
           "baselines": BASELINES,
           "scheduler": {"type": "asha", "max_t": size["max_t"], "grace_period": size["grace"],
                         "reduction_factor": size["factor"]},
           "race": {"top": size["race_top"], "seeds": size["race_seeds"], "min_rounds": size["race_min_rounds"]},
           "resources": {"cpu": 1, "gpu": 0}, "failure": {"max_failures": 1}, "storage": {"path": str(exp.parent)}}
    path = work / "study3.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run(["p2m", "search", "launch", "--config", str(path), "--quiet"])
    return exp


def retrain(exp: Path, size: dict) -> list[int]:
    """train-best's runs on the verdict's seeds (the race's winner and the baselines), then the search's
    single-seed best on the same seeds as its own arm when it is not the winner; returns the seeds."""
    import ray

    from search.best import arms_for, train_best
    from search.config import load_experiment_config
    from search.run import init_ray
    from search.runs import Run, run_phase

    cfg = load_experiment_config(exp / SETTINGS_FILE)
    first = cfg.base.seed + 2000
    seeds = list(range(first, first + size["seeds"]))
    trials = read_trials(exp)
    best = str(pick_best(trials)[TRIAL_ID])
    init_ray(None)
    try:
        train_best(exp, seeds=size["seeds"], previews=0, baselines=(REFERENCE, *COMPARED_BASELINES), verbose=0)
        if best != read_race(exp)["winner"]:
            arms, changing = arms_for(exp, cfg, trials, [best], cfg.max_t)
            run_phase(cfg, exp, "study-search-best", [Run(best, s, SEARCH_BEST, PHASE_VERDICT) for s in seeds], arms,
                      cfg.max_t, split="test", changing=changing, verbose=0)
    finally:
        ray.shutdown()
    return seeds


def evaluate(exp: Path, seeds: list[int], datasets: dict[str, Path], cache: Path) -> pd.DataFrame:
    """One row per verdict run, dataset and view: every stage's metrics of the run's last checkpoint."""
    import torch
    from torch.utils.data import DataLoader

    from p2m.checkpoint import load_model
    from p2m.data.dataset import P2MDataset, collate_p2m
    from p2m.data.layout import find_samples
    from p2m.evaluate import evaluate as evaluate_model

    cache.mkdir(parents=True, exist_ok=True)
    parts = []
    for ray_id, arm, seed, trial_dir in _verdict_trials(exp, seeds):
        path = cache / f"{arm}-{seed}.parquet"
        if not path.is_file():
            checkpoint = sorted(trial_dir.glob(f"checkpoint_*/{CHECKPOINT_FILE}"))[-1].parent
            model, cfg = load_model(checkpoint, torch.device("cpu"))
            rows = []
            for dataset, root in datasets.items():
                loader = DataLoader(P2MDataset(find_samples(root), cfg.data.gt_samples, cfg.data.image_size),
                                    batch_size=8, collate_fn=collate_p2m)
                rows += [{ARM: arm, SEED: seed, "dataset": dataset, **item}
                         for item in evaluate_model(model, loader, torch.device("cpu")).items]
            atomic_write_bytes(path, _parquet(pd.DataFrame(rows)))
            print(f"  evaluated {arm} seed {seed} ({checkpoint.parent.name})", flush=True)
        parts.append(pd.read_parquet(path))
    return pd.concat(parts, ignore_index=True)


def _verdict_trials(exp: Path, seeds: list[int]):
    """(Ray trial id, arm, seed, trial directory) of every verdict run on ``seeds``, from the phases' rows."""
    for phase in sorted(p for p in (exp / RUNS_DIR).iterdir() if (p / "results").is_dir()):
        rows = read_results(phase)
        rows = rows[rows["phase"] == PHASE_VERDICT] if "phase" in rows else rows.iloc[:0]
        for ray_id, group in rows[rows[SEED].isin(seeds)].groupby(TRIAL_ID):
            (trial_dir,) = [d for d in phase.iterdir() if d.is_dir() and f"_{ray_id}_" in d.name]
            yield ray_id, str(group[ARM].iloc[0]), int(group[SEED].iloc[0]), trial_dir


def report(exp: Path, views: pd.DataFrame, seeds: list[int], size: dict, out: Path, analysis: Path) -> list[str]:
    record = read_race(exp)
    trials = read_trials(exp)
    views = views.assign(arm=views[ARM].replace({BEST_ARM: WINNER}))
    search_best = str(pick_best(trials)[TRIAL_ID])
    named = trials.dropna(subset=["baseline"]).set_index("baseline")[TRIAL_ID]
    # an arm that is the race's winner's trial was retrained once, as the winner: the same runs stand for both (the
    # regret, or a change against published, is then 0 by construction)
    same = [SEARCH_BEST] if search_best == record["winner"] else []
    same += [b for b in (REFERENCE, *COMPARED_BASELINES) if named.get(b) == record["winner"]]
    for arm in same:
        views = pd.concat([views, views[views[ARM] == WINNER].assign(arm=arm)], ignore_index=True)
    arms = [WINNER, SEARCH_BEST, *COMPARED_BASELINES]
    m = len(arms) * len(HEADLINE) * len(DATASETS)
    level = 1 - ALPHA / m
    rows = []
    for dataset in DATASETS:
        on = views[views["dataset"] == dataset]
        for arm in arms:
            table = compare_arms(on[on[ARM] == arm], on[on[ARM] == REFERENCE], confidence=level)
            for _, r in table[(table["stage"] == 3) & table["metric"].isin(HEADLINE)].iterrows():
                rows.append({"dataset": dataset, "arm": arm, **r.drop(["stage", "verdict"]).to_dict()})
    family = decide_family(pd.DataFrame(rows))
    regret = []
    for dataset in DATASETS:
        on = views[views["dataset"] == dataset]
        table = compare_arms(on[on[ARM] == SEARCH_BEST], on[on[ARM] == WINNER])
        r = table[(table["stage"] == 3) & (table["metric"] == "cd_x1000")].iloc[0]
        regret.append({"dataset": dataset, **r.drop(["stage"]).to_dict()})
    regret = pd.DataFrame(regret)
    noise = _noise(views, arms + [REFERENCE], m)
    for name, table in (("comparisons", family), ("regret", regret), ("noise", noise)):
        atomic_write_bytes(out / f"{name}.csv", table.to_csv(index=False).encode())
    atomic_write_bytes(out / "race.yaml", yaml.safe_dump(record, sort_keys=False).encode())
    for picture in ("race.png", "learning_curves.png"):
        if (analysis / picture).is_file():
            atomic_write_bytes(out / picture, (analysis / picture).read_bytes())
    _arms_picture(family, out / "arms.png")

    runs = read_runs(exp)
    counts = runs.drop_duplicates([TRIAL_ID, SEED]).groupby("phase").size().to_dict()
    lines = [f"counts: {len(trials)} search trials ({(trials['stop_reason'] == 'completed').sum()} reached max_t "
             f"{size['max_t']}); race: {len(record['candidates'])} candidates, {record['rounds']} rounds, "
             f"{counts.get('race', 0)} runs on seeds {record['seeds'][0]}..{record['seeds'][record['rounds'] - 1]}; "
             f"verdict: {len(views.drop_duplicates([ARM, SEED]))} arm-seeds ({len(arms) + 1} arms x {len(seeds)} seeds "
             f"{seeds[0]}..{seeds[-1]}; {counts.get('verdict', 0)} runs trained), "
             + ", ".join(f"{d} {views[views['dataset'] == d].drop_duplicates(['synset', 'model_id', 'view']).shape[0]} "
                         f"views" for d in DATASETS)]
    labels = record["labels"]
    lines.append(f"race: winner {labels[record['winner']]}; search's single-seed best trial {search_best} "
                 f"({labels.get(search_best, 'trial ' + search_best)}); dropped: "
                 + (", ".join(f"{labels[c]} at round {d['round']}" for c, d in record["dropped"].items()) or "none"))
    head = family[(family["dataset"] == "synthetic") & (family["arm"] == WINNER) & (family["metric"] == "cd_x1000")]
    h = head.iloc[0]
    margin = 100 * EQUIVALENCE_MARGINS["cd_x1000"]
    n_syn = noise[noise["dataset"] == "synthetic"].iloc[0]
    decide = {"better": f"the race's winner beats {REFERENCE}", "worse": f"the race's winner is worse than {REFERENCE}",
              "equivalent": f"the race's winner is equivalent to {REFERENCE} within ±{margin:g}%: searching did not pay",
              "inconclusive": f"undecided (about {n_syn['seeds_needed']:g} seeds per arm would decide a change this "
                              "size)"}[h["verdict"]]
    lines.append(f"PRIMARY  race winner vs {REFERENCE}, stage-3 test CD, synthetic held-out set: "
                 f"{100 * h['change']:+.2f}% [{100 * h['low']:+.2f}, {100 * h['high']:+.2f}] ({100 * level:.2f}% "
                 f"interval, Holm p {h['p_holm']:.3g}, family of {m}) -> {h['verdict']}: {decide}")
    for _, r in regret.iterrows():
        lines.append(f"REGRET   search's best vs race winner, stage-3 CD, {r['dataset']}: {100 * r['change']:+.2f}% "
                     f"[{100 * r['low']:+.2f}, {100 * r['high']:+.2f}] (95%, {int(r['seeds'])} seeds x "
                     f"{int(r['models'])} models)")
    lines.append(f"family (every arm against {REFERENCE}; CD relative, F@tau in points, normal consistency absolute):")
    for _, r in family.iterrows():
        scale, unit = (100, "%") if r["relative"] else (1, "")
        lines.append(f"  {r['dataset']:9s} {r['arm']:12s} {r['metric']:18s} {scale * r['change']:+8.3f}{unit} "
                     f"[{scale * r['low']:+.3f}, {scale * r['high']:+.3f}]  p_holm {r['p_holm']:.3g} -> {r['verdict']}")
    lines.append("noise floor (stage-3 CD x 1000, per run mean over the views):")
    for _, r in noise.iterrows():
        lines.append(f"  {r['dataset']:9s} seed SD {r['sd']:.3f} ({100 * r['relative']:.1f}% of the mean, {int(r['dof'])} "
                     f"dof over {int(r['arms'])} arms); winner vs {REFERENCE} paired per-seed spread "
                     f"{100 * r['sd_diff']:.2f}%: {int(r['seeds'])} seeds resolve about ±{100 * r['resolvable']:.2f}% "
                     f"(80% power, alpha {ALPHA}/{m})")
    return lines


def _noise(views: pd.DataFrame, arms: list[str], m: int) -> pd.DataFrame:
    cd = stage_key(3, "cd_x1000")
    out = []
    for dataset in DATASETS:
        per_run = views[(views["dataset"] == dataset) & views[ARM].isin(arms)].groupby([ARM, SEED])[cd].mean()
        per_run = per_run.reset_index()
        sd, dof = seed_sd(per_run.drop_duplicates([ARM, SEED]), group=ARM, value=cd)
        table = per_run.pivot(index=SEED, columns=ARM, values=cd)
        diff = (table[WINNER] - table[REFERENCE]) / table[REFERENCE].mean()
        sd_diff = float(diff.std(ddof=1))
        change = float(table[WINNER].mean() / table[REFERENCE].mean() - 1)
        out.append({"dataset": dataset, "sd": sd, "relative": sd / per_run[cd].mean(), "dof": dof,
                    "arms": per_run[ARM].nunique(), "sd_diff": sd_diff, "seeds": len(table),
                    "resolvable": resolvable_change(sd_diff, len(table), alpha=ALPHA / m),
                    "seeds_needed": seeds_needed(change, sd_diff, alpha=ALPHA / m)})
    return pd.DataFrame(out)


def _arms_picture(family: pd.DataFrame, path: Path, limit: float = 25.0) -> None:
    """Each arm's stage-3 CD change against published with its interval, one panel per test set, each arm's
    verdict beside it; an arm whose interval passes ``limit`` percent is drawn at the edge with its value written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cd = family[family["metric"] == "cd_x1000"]
    margin = 100 * EQUIVALENCE_MARGINS["cd_x1000"]
    fig, axes = plt.subplots(1, len(DATASETS), figsize=(11.5, 3.8))
    for ax, dataset in zip(axes, DATASETS):
        rows = cd[cd["dataset"] == dataset].reset_index(drop=True)
        ax.axvspan(-margin, margin, color="C2", alpha=0.15, label=f"equivalence margin ±{margin:g}%")
        ax.axvline(0, color="0.3", lw=0.8)
        for y, r in rows.iterrows():
            change, low, high = 100 * r["change"], 100 * r["low"], 100 * r["high"]
            if low > limit or high < -limit:  # off the scale: an arrow at the edge, its figures written
                edge = limit if low > limit else -limit
                ax.annotate(f"{change:+.0f}% [{low:+.0f}, {high:+.0f}]  {r['verdict']}", (edge, y),
                            xytext=(-8 if edge > 0 else 8, 0), textcoords="offset points", va="center",
                            ha="right" if edge > 0 else "left", arrowprops={"arrowstyle": "->"}, fontsize=8)
                continue
            ax.errorbar([change], [y], xerr=[[change - max(low, -limit)], [min(high, limit) - change]], fmt="o",
                        color="C0", capsize=3)
            ax.text(min(high, limit) + 0.8, y, r["verdict"], va="center", fontsize=8)
        ax.set_yticks(range(len(rows)), rows["arm"])
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_xlim(-limit, limit)
        ax.set_xlabel(f"stage-3 test CD change against {REFERENCE} (%)")
        ax.set_title(f"{dataset} test views ({100 * (1 - ALPHA / len(family)):.2f}% intervals)")
    axes[0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _parquet(df: pd.DataFrame) -> bytes:
    import io

    sink = io.BytesIO()
    df.to_parquet(sink, index=False)
    return sink.getvalue()


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True, check=True).stdout.strip()


if __name__ == "__main__":
    raise SystemExit(main())
