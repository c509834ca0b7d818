"""Column names of the results tables, defined once (torch-free: ``search`` and analysis import them).

Two tables live in an experiment directory:

``results/`` (a Parquet dataset, one row per reported result, i.e. per trial and epoch):
    experiment, trial_id, training_iteration, written_at (seconds since the epoch, for ordering), baseline
    (the baseline's name, for the baseline trials);
    every metric ``p2m.train.fit`` reports (epoch, train_loss, train_s{1,2,3}_{term},
    val_s{1,2,3}_{metric}, lr, epoch_seconds, train_samples_per_second, val_views);
    Ray's bookkeeping (time_total_s, time_this_iter_s, timestamp, node_ip, node_id (the Ray node the epoch ran
    on: tells nodes apart even when they share a host), hostname, pid);
    device; and the trial's whole config flattened as ``config.<section>.<field>`` (the 12 weights are
    ``config.loss.w{stage}_{term}``).

``trials.parquet`` (one row per trial):
    experiment, trial_id, baseline, status (Ray's: TERMINATED, ERROR, RUNNING, PENDING, PAUSED), stop_reason
    (completed, stopped_early, errored, unfinished), error, iterations, best_<objective>,
    best_iteration, last_<objective>, the config columns, and the last result's metrics as ``last.<name>``.
"""
from __future__ import annotations

STAGES = (1, 2, 3)
TERMS = ("chamfer", "edge", "laplacian", "normal")
STAGE_METRICS = ("cd", "cd_x1000", "cd_pred_to_gt", "cd_gt_to_pred", "f_tau", "f_2tau", "normal_consistency",
                 "smoothness")

EXPERIMENT = "experiment"
TRIAL_ID = "trial_id"
ITERATION = "training_iteration"
WRITTEN_AT = "written_at"
KEY = (TRIAL_ID, ITERATION)

CONFIG_PREFIX = "config."
OBJECTIVE = "val_s3_cd"  # what the search minimises: stage-3 validation chamfer distance
MODE = "min"

RESULTS_DIR = "results"
TRIALS_FILE = "trials.parquet"
SPACE_FILE = "space.json"  # the searched domains, written by ``p2m search launch``
SETTINGS_FILE = "search_config.yaml"  # the search's settings (max_t, scheduler, resources, ...)
PREVIEWS_DIR = "previews"  # <experiment>/previews/<trial_id>/*.png, written by trials that reach max_t

BASELINE = "baseline"  # the baseline's name in both tables (None for a searched trial)

# trials table
STATUS = "status"
STOP_REASON = "stop_reason"
ERROR = "error"
ITERATIONS = "iterations"
STOP_COMPLETED = "completed"
STOP_EARLY = "stopped_early"
STOP_ERRORED = "errored"
STOP_UNFINISHED = "unfinished"


def weight_column(stage: int, term: str) -> str:
    """``weight_column(2, "edge") == "config.loss.w2_edge"``."""
    if stage not in STAGES or term not in TERMS:
        raise ValueError(f"no loss weight for stage {stage!r} and term {term!r}")
    return f"{CONFIG_PREFIX}loss.w{stage}_{term}"


def val_column(stage: int, metric: str) -> str:
    """``val_column(3, "cd") == "val_s3_cd"``."""
    if stage not in STAGES or metric not in STAGE_METRICS:
        raise ValueError(f"no validation metric {metric!r} for stage {stage!r}")
    return f"val_s{stage}_{metric}"


def term_column(stage: int, term: str) -> str:
    """``term_column(1, "normal") == "train_s1_normal"`` (the unweighted term's epoch mean)."""
    if stage not in STAGES or term not in TERMS:
        raise ValueError(f"no loss term {term!r} for stage {stage!r}")
    return f"train_s{stage}_{term}"


WEIGHT_COLUMNS = tuple(weight_column(s, t) for s in STAGES for t in TERMS)
SAMPLE_COLUMNS = (f"{CONFIG_PREFIX}data.gt_samples",) + tuple(f"{CONFIG_PREFIX}loss.pred_samples{s}" for s in STAGES)
VAL_COLUMNS = tuple(val_column(s, m) for s in STAGES for m in STAGE_METRICS)
TERM_COLUMNS = tuple(term_column(s, t) for s in STAGES for t in TERMS)
