"""``p2m search train-best``: retrain the best trial's config without Ray, with K seeds, and test it.

The best trial is the top of the one ranking rule (:mod:`results.trials`, which the console leaderboard and
the report use too): among trials that reached ``max_t``, the lowest last-epoch objective (the figure ASHA
compared), not the best single epoch, which would favour lucky noise. Each seed trains in
``<experiment>/train_best/seed<k>`` (the usual ``p2m train`` run directory: checkpoints, metrics, meshes,
previews) and is evaluated on the test split; one row per seed goes to ``<experiment>/train_best/results.parquet``
and one row per seed and test view to ``views.parquet`` beside it (what ``p2m results analyze`` pairs with
the baselines' to give a change with its interval). ``--baseline NAME`` retrains a baseline trial the same
way into ``train_best_NAME/``. The best trial of a population search (``pbt``, ``pb2``) is retrained with its
schedule: the weights its model trained with, epoch by epoch, through the trials whose checkpoints it
continued (:func:`results.trials.lineage`), the last ones kept past the schedule's end.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd

from p2m.config import TrainConfig, from_dict
from p2m.names import (CHECKPOINT_DIR, CONFIG_PREFIX, CURVES_FILE, METRICS, OBJECTIVE, SETTINGS_FILE, STAGES,
                       TRAIN_BEST_RESULTS_FILE, TRAIN_BEST_VIEWS_FILE, stage_key, test_column, train_best_dir,
                       val_column)
from results.pareto import pick_on_front
from results.schema import ITERATION, ITERATIONS, LAST_OBJECTIVE, TRIAL_ID
from results.store import read_results, read_trials, write_table_atomic
from results.trials import lineage, pick_baseline, pick_best
from search.config import load_experiment_config
from search.population import POPULATION_SCHEDULERS, changing_keys
from search.space import apply_params

TRIAL_LAST = f"trial_{LAST_OBJECTIVE}"  # the retrained trial's own last objective in the search


def trial_config(row: pd.Series) -> TrainConfig:
    """The trial's full TrainConfig from its ``config.*`` columns."""
    nested: dict = {}
    for key, value in row.items():
        if not key.startswith(CONFIG_PREFIX):
            continue
        parts = key[len(CONFIG_PREFIX):].split(".")
        value = _plain(value)
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return from_dict(nested, base=TrainConfig(), source=f"trial {row[TRIAL_ID]}")


def train_best(experiment_dir: str | Path, epochs: int | None = None, seeds: int = 1, split: str = "test",
               previews: int = 4, progress: bool = True, baseline: str | None = None,
               pick: str | None = None) -> pd.DataFrame:
    """Retrain and test the best trial, the trial of the Pareto front that the rule ``pick`` names
    (:func:`results.pareto.pick_on_front`), or the baseline trial named ``baseline`` (into
    ``train_best_<name>/``, to compare the two at the same budget); returns (and writes) one row per seed."""
    from torch.utils.data import DataLoader

    from p2m.checkpoint import load_model
    from p2m.data.dataset import P2MDataset, collate_p2m
    from p2m.data.layout import find_samples
    from p2m.evaluate import evaluate
    from p2m.predict import plot_curves, write_previews
    from p2m.train import fit, resolve_device

    exp = Path(experiment_dir)
    search_cfg = load_experiment_config(exp / SETTINGS_FILE)
    trials = read_trials(exp)
    if baseline is not None:
        best = pick_baseline(trials, baseline)
    elif pick is not None:
        best = pick_on_front(trials, pick, search_cfg.objective_modes())
    else:
        best = pick_best(trials)
    out_dir = exp / train_best_dir(baseline)
    cfg = trial_config(best)
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    epochs = epochs or search_cfg.max_t
    test_samples = find_samples(cfg.data.root, split)
    if not test_samples:
        raise ValueError(f"{cfg.data.root}: no samples in split {split!r}")
    label = f"baseline {baseline}, trial" if baseline else f"picked ({pick}) trial" if pick else "best trial"
    print(f"{label} {best[TRIAL_ID]}: last val CDx1000 {1000 * best[LAST_OBJECTIVE]:.3f} after "
          f"{int(best[ITERATIONS])} epochs; retraining {seeds} seed(s) for {epochs} epochs")
    rows, view_rows = [], []
    segments = [(epochs, {})]
    if baseline is None and pick is None and search_cfg.scheduler in POPULATION_SCHEDULERS:
        segments = weight_segments(read_results(exp), str(best[TRIAL_ID]), changing_keys(search_cfg.space()), epochs)
        print(f"  its schedule: {' | '.join(_describe(segment) for segment in segments)}")
    changing = tuple(dict.fromkeys(key for _, values in segments for key in values))
    for k in range(seeds):
        out = out_dir / f"seed{k}"
        start = None
        for end, values in segments:  # one segment, from scratch, unless a population search changed weights
            run_cfg = dataclasses.replace(apply_params(cfg, values, f"trial {best[TRIAL_ID]}'s schedule"),
                                          seed=cfg.seed + k)
            run_cfg = dataclasses.replace(run_cfg, optim=dataclasses.replace(run_cfg.optim, max_epochs=end))
            result = fit(run_cfg, out, resume_from=start, progress=progress, log=print if progress else None,
                         changing=changing)
            start = out / CHECKPOINT_DIR
        plot_curves(result.history, out / CURVES_FILE, title=f"best trial {best[TRIAL_ID]}, seed {run_cfg.seed}")
        device = resolve_device(run_cfg.device)
        model, _ = load_model(out / CHECKPOINT_DIR, device)  # the last epoch, as the search compared
        loader = DataLoader(P2MDataset(test_samples, run_cfg.data.gt_samples, run_cfg.data.image_size),
                            batch_size=run_cfg.optim.batch_size, collate_fn=collate_p2m)
        test = evaluate(model, loader, device)
        view_rows += [{TRIAL_ID: best[TRIAL_ID], "seed": run_cfg.seed, "split": split, **item} for item in test.items]
        if previews:
            step = max(1, len(test_samples) // previews)
            write_previews(model, run_cfg, test_samples[::step][:previews], out)
        last = result.history[-1]
        print(f"  seed {run_cfg.seed}: val CDx1000 {last[val_column(3, 'cd_x1000')]:.3f}, "
              f"test CDx1000 {test.means[stage_key(3, 'cd_x1000')]:.3f} over {len(test.items)} views")
        rows.append({TRIAL_ID: best[TRIAL_ID], "seed": run_cfg.seed, "epochs": epochs, "split": split,
                     TRIAL_LAST: float(best[LAST_OBJECTIVE]),
                     **{val_column(s, m): last[val_column(s, m)] for s in STAGES for m in METRICS},
                     **{test_column(s, m): test.means[stage_key(s, m)] for s in STAGES for m in METRICS},
                     "test_views": len(test.items),
                     **{f"{CONFIG_PREFIX}{k2}": (list(v) if isinstance(v, tuple) else v)
                        for k2, v in run_cfg.flat().items()}})
    df = pd.DataFrame(rows)
    import pyarrow as pa

    write_table_atomic(pa.Table.from_pandas(df, preserve_index=False), out_dir / TRAIN_BEST_RESULTS_FILE)
    write_table_atomic(pa.Table.from_pandas(pd.DataFrame(view_rows), preserve_index=False),
                       out_dir / TRAIN_BEST_VIEWS_FILE)
    _summary(df)
    return df


def weight_segments(results: pd.DataFrame, trial_id: str, keys: tuple[str, ...],
                    epochs: int) -> list[tuple[int, dict]]:
    """The values of config ``keys`` that trial ``trial_id``'s model trained with, through its lineage, as
    segments of epochs with the same values: ``[(last epoch, {key: value}), ...]`` covering epochs 1..``epochs``
    (the lineage's last values continue past its end; a lineage longer than ``epochs`` is cut)."""
    rows = lineage(results, trial_id).drop_duplicates(ITERATION, keep="last")
    columns = [CONFIG_PREFIX + key for key in keys if CONFIG_PREFIX + key in rows]
    if rows.empty or not columns:
        return [(epochs, {})]
    segments: list[tuple[int, dict]] = []
    for _, row in rows[rows[ITERATION] <= epochs].iterrows():
        values = {c[len(CONFIG_PREFIX):]: _plain(row[c]) for c in columns}
        if segments and segments[-1][1] == values:
            segments[-1] = (int(row[ITERATION]), values)
        else:
            segments.append((int(row[ITERATION]), values))
    segments[-1] = (epochs, segments[-1][1])
    return segments


def _plain(value):
    """A table cell as plain Python: a NumPy array as a list, a NumPy scalar as its Python number."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def _describe(segment: tuple[int, dict]) -> str:
    end, values = segment
    return f"to epoch {end}: " + ", ".join(f"{k.split('.')[-1]} {v:.3g}" for k, v in values.items())


def _summary(df: pd.DataFrame) -> None:
    val = df[OBJECTIVE] * 1000
    spread = f" ± {val.std(ddof=1):.3f}" if len(df) > 1 else ""
    print(f"retrained val CDx1000 {val.mean():.3f}{spread} (the trial: {1000 * df[TRIAL_LAST].iloc[0]:.3f})")
    for s in STAGES:
        cd, f = df[test_column(s, "cd_x1000")].mean(), df[test_column(s, "f_tau")].mean()
        print(f"  test stage {s}: CDx1000 {cd:.3f}  F@tau {f:.2f}" + ("" if math.isfinite(cd) else " (not finite)"))
