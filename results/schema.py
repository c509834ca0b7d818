"""Column names of the results tables, defined once (torch-free: ``search`` and analysis import them). The
names the tables share with p2m and search (stages, metrics, the objective, a weight's column, the
experiment's files) are :mod:`p2m.names`'; this module adds the tables' own.

Two tables live in an experiment directory:

``results/`` (a Parquet dataset, one row per reported result, i.e. per trial and epoch):
    experiment, trial_id, training_iteration, written_at (seconds since the epoch, for ordering), baseline
    (the baseline's name, for the baseline trials);
    every metric ``p2m.train.fit`` reports (epoch, train_loss, ``train_column(stage, term)``,
    ``val_column(stage, metric)``, lr, epoch_seconds, train_samples_per_second, val_views);
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

from p2m.names import OBJECTIVE, SAMPLE_PARAMS, WEIGHTS, config_column

EXPERIMENT = "experiment"
TRIAL_ID = "trial_id"
ITERATION = "training_iteration"
WRITTEN_AT = "written_at"
KEY = (TRIAL_ID, ITERATION)

# Ray's bookkeeping kept in a result row (search.callbacks), and where the trial ran (search.trainable)
TIME_TOTAL_S = "time_total_s"  # the trial's seconds so far
TIME_THIS_ITER_S = "time_this_iter_s"  # this epoch's seconds
TIMESTAMP = "timestamp"  # when the result was reported (seconds since the epoch)
NODE_IP, NODE_ID, HOSTNAME, PID = "node_ip", "node_id", "hostname", "pid"
RAY_KEYS = (TIME_TOTAL_S, TIME_THIS_ITER_S, TIMESTAMP, NODE_IP, NODE_ID, HOSTNAME, PID)
DEVICE = "device"  # the torch device the trial trained on

BASELINE = "baseline"  # the baseline's name in both tables (None for a searched trial)
# a population search (pbt, pb2): with the first epoch a trial trained from another trial's checkpoint, that trial
# and the checkpoint's epoch (results.trials.lineage follows them back)
PARENT_TRIAL = "parent_trial"
PARENT_EPOCH = "parent_epoch"
VIEW_KEY = ("synset", "model_id", "view")  # what identifies a view in the per-view tables

# a retraining run's columns (search.runs: the race's and train-best's runs, their ledger and the train_best tables)
PHASE = "phase"  # PHASE_RACE or PHASE_VERDICT
PHASE_RACE = "race"  # a race's run: chosen on its validation figure
PHASE_VERDICT = "verdict"  # train-best's run: tested on seeds that chose nothing
ARM = "arm"  # what the run stands for: BEST_ARM, a baseline's name, or a race candidate's label
REFERENCE = "published"  # the baseline every race includes and every decision is taken against
BEST_ARM = "best"  # the configuration train-best retrains as the search's answer (the race's winner, else its best)
SEED = "seed"
ROUND = "round"  # a race's round (1-based); 0 for train-best's runs
SPLIT = "split"  # the split a run was tested on
EPOCHS = "epochs"  # the epochs a run trained
TEST_VIEWS = "test_views"  # the views it was tested on

# trials table
STATUS = "status"
STOP_REASON = "stop_reason"
ERROR = "error"
ITERATIONS = "iterations"
STOP_COMPLETED = "completed"
STOP_EARLY = "stopped_early"
STOP_ERRORED = "errored"
STOP_UNFINISHED = "unfinished"

WEIGHT_COLUMNS = tuple(w.column for w in WEIGHTS)  # the 12 searched weights
SAMPLE_COLUMNS = tuple(config_column(p) for p in SAMPLE_PARAMS)

# trials-table figures, derived from the result rows (results.trials)
BEST_OBJECTIVE = f"best_{OBJECTIVE}"  # the lowest objective any epoch reported
BEST_ITERATION = "best_iteration"  # its epoch
LAST_OBJECTIVE = f"last_{OBJECTIVE}"  # the objective at the last epoch run: what ranks trials
NUM_FAILURES = "num_failures"
LAST_PREFIX = "last."  # the last epoch's metrics: last.<metric>
