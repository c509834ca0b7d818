"""The names p2m, search and results share, defined once: stages, loss terms, metrics, the objective, the
spellings of a loss weight, and the files of an experiment and of a training run.

This module imports nothing beyond ``typing``, so every package can import it (``results`` never imports
torch or Ray) and a rename happens here and nowhere else. The results tables' own column names
(trial_id, stop_reason, ...) live in :mod:`results.schema`, built on these.
"""
from __future__ import annotations

from typing import NamedTuple

STAGES = (1, 2, 3)  # the three deformation blocks, and the mesh each outputs
TERMS = ("chamfer", "edge", "laplacian", "normal")  # the terms whose per-stage weights a search tunes: 12 weights
FIXED_TERMS = ("move",)  # weighted per stage too, held at the reference's values unless a space names them
LOSS_TERMS = TERMS + FIXED_TERMS


class Metric(NamedTuple):
    """A per-stage evaluation metric (p2m.geometry.metrics) and how two values of it compare: which way it
    improves, and whether a change in it is told relative to its value (a distance) or in its own points (a
    percentage, a cosine)."""

    name: str
    higher_is_better: bool
    relative: bool


# the metric table: every direction and every "compared" list derives from it. CD and its two directions, F-scores,
# normals, smoothness
METRIC_TABLE = (Metric("cd", False, True), Metric("cd_x1000", False, True), Metric("cd_pred_to_gt", False, True),
                Metric("cd_gt_to_pred", False, True), Metric("f_tau", True, False), Metric("f_2tau", True, False),
                Metric("normal_consistency", True, False), Metric("smoothness", False, True))
METRICS = tuple(m.name for m in METRIC_TABLE)


def metric_row(name: str) -> Metric:
    """The row of metric ``name`` in the metric table."""
    for m in METRIC_TABLE:
        if m.name == name:
            return m
    raise ValueError(f"no metric {name!r} (known: {', '.join(METRICS)})")


CONFIG_PREFIX = "config."  # a trial's config key ``loss.w2_edge`` is the results column ``config.loss.w2_edge``


def stage_key(stage: int, name: str) -> str:
    """A per-stage quantity: a loss term (``stage_key(1, "edge") == "s1_edge"``) or a metric (``"s3_cd"``)."""
    if stage not in STAGES or name not in LOSS_TERMS + METRICS:
        raise ValueError(f"no per-stage quantity {name!r} for stage {stage!r}")
    return f"s{stage}_{name}"


def train_column(stage: int, term: str) -> str:
    """The epoch mean of an unweighted loss term: ``train_column(1, "normal") == "train_s1_normal"``."""
    if term not in LOSS_TERMS:
        raise ValueError(f"no loss term {term!r}")
    return f"train_{stage_key(stage, term)}"


def val_column(stage: int, metric: str) -> str:
    """A validation metric: ``val_column(3, "cd") == "val_s3_cd"``."""
    return _metric_column("val", stage, metric)


def test_column(stage: int, metric: str) -> str:
    """A test metric (``p2m search train-best``): ``test_column(3, "f_tau") == "test_s3_f_tau"``."""
    return _metric_column("test", stage, metric)


def _metric_column(prefix: str, stage: int, metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"no metric {metric!r} (known: {', '.join(METRICS)})")
    return f"{prefix}_{stage_key(stage, metric)}"


# what training reports each epoch besides the per-stage metrics (p2m.train.fit's history, a trial's results rows)
EPOCH = "epoch"  # epochs completed
TRAIN_LOSS = "train_loss"  # the epoch's mean weighted training loss
VAL_VIEWS = "val_views"  # the validation views measured
LR = "lr"  # the learning rate at the epoch's end
EPOCH_SECONDS = "epoch_seconds"  # training and validation
SAMPLES_PER_SECOND = "train_samples_per_second"  # training only
REPORTED = (EPOCH, TRAIN_LOSS, VAL_VIEWS, LR, EPOCH_SECONDS, SAMPLES_PER_SECOND)

OBJECTIVE = val_column(3, "cd")  # what a search minimises: the stage-3 validation chamfer distance, "val_s3_cd"
MODE = "min"
HIGHER_IS_BETTER = tuple(m.name for m in METRIC_TABLE if m.higher_is_better)  # what a search maximises
DIRECTIONS = {"min": "minimize", "max": "maximize"}  # a mode (Ray's spelling) -> Optuna's direction


def val_metric_mode(column: str) -> str:
    """"min" or "max": which way a validation metric column improves.

    Raises:
        ValueError: naming ``column`` when it is not a validation metric.
    """
    for stage in STAGES:
        for m in METRIC_TABLE:
            if column == val_column(stage, m.name):
                return "max" if m.higher_is_better else "min"
    raise ValueError(f"{column!r} is not a validation metric (e.g. {OBJECTIVE}, {val_column(3, 'normal_consistency')})")


class Weight(NamedTuple):
    """One loss weight and its three spellings: the ``LossConfig`` field, the config key (what a search space
    and ``--set`` name) and the results-table column."""

    stage: int
    term: str

    @property
    def field(self) -> str:  # "w2_edge"
        return f"w{self.stage}_{self.term}"

    @property
    def param(self) -> str:  # "loss.w2_edge"
        return f"loss.{self.field}"

    @property
    def column(self) -> str:  # "config.loss.w2_edge"
        return config_column(self.param)


def weight(stage: int, term: str) -> Weight:
    """The weight of ``term`` at ``stage``; the only place its spellings are made."""
    if stage not in STAGES or term not in LOSS_TERMS:
        raise ValueError(f"no loss weight for stage {stage!r} and term {term!r}")
    return Weight(stage, term)


WEIGHTS = tuple(weight(s, t) for s in STAGES for t in TERMS)  # the 12 searched weights, stage-major
FIXED_WEIGHTS = tuple(weight(s, t) for s in STAGES for t in FIXED_TERMS)


def learned_column(stage: int) -> str:
    """The chamfer weight ``loss.weighting: learned`` trains at ``stage``, reported per epoch:
    ``learned_column(2) == "learned_w2_chamfer"``."""
    return f"learned_{weight(stage, 'chamfer').field}"


def config_column(param: str) -> str:
    """The results column of a config key: ``config_column("data.gt_samples") == "config.data.gt_samples"``."""
    return CONFIG_PREFIX + param


def pred_samples_field(stage: int) -> str:
    """The ``LossConfig`` field of a stage's surface-sample count: ``"pred_samples2"``."""
    if stage not in STAGES:
        raise ValueError(f"no stage {stage!r}")
    return f"pred_samples{stage}"


# the forms of the regularising terms (LossConfig.edge_form, laplacian_form, normal_form; p2m.loss)
FORM_P2M = "p2m"  # each term's form in the reference implementation, the default
EDGE_TARGET = "target"  # squared deviation of each edge length from loss.edge_target_length
LAPLACIAN_SMOOTH, LAPLACIAN_SMOOTH_SQ = "smooth", "smooth_sq"  # mean |delta|, mean |delta|^2
NORMAL_CONSISTENCY, NORMAL_VERTEX = "consistency", "vertex"  # adjacent-face normals; vertex vs nearest GT normal
EDGE_FORMS = (FORM_P2M, EDGE_TARGET)
LAPLACIAN_FORMS = (FORM_P2M, LAPLACIAN_SMOOTH, LAPLACIAN_SMOOTH_SQ)
NORMAL_FORMS = (FORM_P2M, NORMAL_CONSISTENCY, NORMAL_VERTEX)

# the searched sample counts, as config keys
SAMPLE_PARAMS = ("data.gt_samples",) + tuple(f"loss.{pred_samples_field(s)}" for s in STAGES)

# what a search runs: its searcher's algorithm and its scheduler (search.schedulers, search.population)
TPE, RANDOM = "tpe", "random"
ALGORITHMS = (TPE, RANDOM)
ASHA, FIFO, PBT, PB2 = "asha", "fifo", "pbt", "pb2"
# weight schedules, whose trials the analysis draws (search.schedulers: those whose Strategy shares checkpoints)
POPULATION_SCHEDULERS = (PBT, PB2)

# a dataset in the ShapeNet-P2M format (p2m.data.layout)
RENDERING_DIR = "rendering"  # <synset>/<model_id>/rendering/<view>.{png,dat}: the original layout
LAYOUTS = (RENDERING_DIR, "flat")  # p2m data synth --layout: the original (with file lists), or as the public sample
SYNTH_META_FILE = "synth_meta.json"  # p2m data synth's settings, written last: a synthetic dataset is whole


# an experiment directory (storage.path/<name>), written by ``p2m search``
SETTINGS_FILE = "search_config.yaml"  # the search's settings and base training config
SPACE_FILE = "space.json"  # the searched distributions, in Optuna's JSON form
RESULTS_DIR = "results"  # the Parquet dataset: one row per trial and epoch
TRIALS_FILE = "trials.parquet"  # one row per trial
JOURNAL_FILE = "optuna_journal.log"  # the Optuna study (unless an RDB URL holds it)
PREVIEWS_DIR = "previews"  # previews/<trial_id>/ of trials that reached max_t; previews/ of a run too
VIEWS_DIR = "views"  # the Parquet dataset of per-view validation metrics (search.val_per_view)
TRAIN_BEST_DIR = "train_best"  # p2m search train-best's runs (seed<k>/) and TRAIN_BEST_RESULTS_FILE
TRAIN_BEST_RESULTS_FILE = "results.parquet"  # one row per seed
TRAIN_BEST_VIEWS_FILE = "views.parquet"  # one row per seed and test view


RUNS_DIR = "runs"  # retraining runs (a race's, train-best's) as Ray trials: runs/<phase>/ (a Ray experiment each),
RUNS_FINISHED_DIR = "finished"  # runs/finished/<trial_id>-seed<k>.parquet: a finished run's test rows (its ledger entry)
RACE_FILE = "race.yaml"  # runs/race.yaml: the race's candidates, seeds, rounds, dropped and winner


def train_best_dir(baseline: str | None = None) -> str:
    """Where ``train-best`` retrains the best trial (``train_best``) or a baseline (``train_best_<name>``)."""
    return TRAIN_BEST_DIR if baseline is None else f"{TRAIN_BEST_DIR}_{baseline}"


# a training run directory (p2m train --out, a trial's work directory, each train-best seed)
RUN_CONFIG_FILE = "config.yaml"  # the resolved TrainConfig
METRICS_FILE = "metrics.jsonl"  # one line per epoch
CHECKPOINT_DIR = "checkpoint"  # holds CHECKPOINT_FILE, the latest epoch
CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"  # the epoch with the lowest OBJECTIVE
WEIGHTS_FILE = "weights.pt"  # a finished run's last epoch, its evaluated weights only (p2m.checkpoint.final_weights)
CURVES_FILE = "curves.png"

