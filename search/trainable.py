"""The Ray Tune trainable: the only module that calls Ray's report and checkpoint API.

A trial is ``p2m.train.fit`` on the base config with the sampled point applied. Every epoch it
reports the epoch's metrics with the epoch's checkpoint (one report = one ``training_iteration`` = one
epoch, ASHA's time unit), and a restarted trial (after a node loss, a driver restart or a retry)
continues from ``tune.get_checkpoint()``. A loss that becomes NaN or infinite raises
``NonFiniteLossError`` out of the trial, which Ray records as the trial's error.

Stopping. Ray stops a trial (ASHA's early stop, or max_t reached) by raising ``SystemExit`` in the
training thread from inside ``tune.report`` and ending the trial's process without waiting for that
thread. Unwinding the thread then frees torch tensors while the interpreter shuts down, which aborts the
process ("Fatal Python error: Aborted" and a C++ stack trace on the driver's console). So the trial
removes its work directory and parks the thread instead of unwinding it; the process exits around it.
Ray is told not to reuse actors (``reuse_actors=False`` in :mod:`search.run`), so a parked thread is
never left in a process that trains again. A trial process killed outright (SIGKILL, a lost node) cannot
clean up: its work directory carries its process id, and the next trial to start on that machine removes
the directories of processes that are gone (:func:`remove_stale_workdirs`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import platform
import shutil
import tempfile
import threading
from pathlib import Path

import ray
from ray import tune

from p2m.codec import to_plain
from p2m.config import TrainConfig, from_dict
from p2m.names import (CHECKPOINT_DIR, CHECKPOINT_FILE, CONFIG_PREFIX, CURVES_FILE, EPOCH, METRICS, METRICS_FILE,
                       PREVIEWS_DIR, RUN_CONFIG_FILE, STAGES, VIEWS_DIR, WEIGHTS_FILE, stage_key, test_column,
                       train_best_dir, val_column)
from p2m.train import fit, resolve_device
from results import storage
from results.lease import pid_alive
from results.runs import is_finished, write_run
from results.schema import (ARM, BEST_ARM, DEVICE, EPOCHS, HOSTNAME, ITERATION, NODE_ID, PARENT_EPOCH, PARENT_TRIAL,
                            PHASE, ROUND, SEED, SPLIT, TRIAL_ID)
from results.parquet import VIEWS_KEY, ResultsWriter
from search.population import trial_params
from search.smoke import local_data
from search.space import apply_params


def train_trial(params: dict, base: dict, experiment_dir: str | None = None, previews: int = 2,
                val_per_view: bool = False, changing: tuple[str, ...] = ()) -> None:
    """Ray Tune function trainable.

    Args:
        params: the sampled point, ``{"loss.w2_edge": 0.3, ...}``.
        base: the base ``TrainConfig`` as a dict (``to_dict()``), bound with ``tune.with_parameters``.
        experiment_dir: when given, a trial that reaches its last epoch writes OBJ meshes and preview PNGs of
            ``previews`` validation views to its ``PREVIEWS_DIR/<trial_id>/`` (the report shows the best
            trial's), and, with ``val_per_view``, each epoch's per-view validation metrics to its ``VIEWS_DIR``
            (one Parquet part per epoch; the driver compacts them when the search ends).
        changing: config keys a population scheduler (PBT, PB2) may change between a checkpoint and the trial
            that continues from it (:mod:`search.population`); ``params`` may then give weights as their log10.
    """
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # not a line per checkpoint in the driver's log
    cfg = apply_params(from_dict(base, base=TrainConfig(), source="search base"), trial_params(params))
    device = str(resolve_device(cfg.device))
    extra = _row_extra(cfg, device)
    cfg = local_data(cfg)  # the smoke dataset: this node's copy when the driver's is on another host
    with _scratch() as workdir:
        resume_from, parent = _restored(workdir), {}
        if resume_from is not None:
            parent = _parent(resume_from, tune.get_context().get_trial_id())

        def on_epoch(metrics: dict, checkpoint_dir: Path, views: list[dict]) -> None:
            trial_id = tune.get_context().get_trial_id()
            (checkpoint_dir / OWNER_FILE).write_text(f"{trial_id}\n{metrics[EPOCH]}\n")  # whose: see _parent
            if experiment_dir and previews and metrics[EPOCH] == cfg.optim.max_epochs:
                _write_previews(cfg, checkpoint_dir, storage.join(experiment_dir, PREVIEWS_DIR, trial_id), previews)
            if experiment_dir and val_per_view:
                writer = ResultsWriter(experiment_dir, flush_every=len(views), table=VIEWS_DIR, key=VIEWS_KEY)
                writer.extend([{TRIAL_ID: trial_id, ITERATION: metrics[EPOCH], **row} for row in views])
            _report({**metrics, **extra, **parent}, checkpoint_dir, workdir)
            parent.clear()  # said once, with the first epoch trained from it

        # the checkpoint at max_t is a final one (the evaluated weights): kept for predict, never resumed
        fit(dataclasses.replace(cfg, device=device), workdir / "run", on_epoch=on_epoch, resume_from=resume_from,
            progress=False, save_best=False, log=None, changing=changing, final=True)


def _row_extra(cfg: TrainConfig, device: str) -> dict:
    """What every result row of a trial or run adds to its metrics: where it ran (the device, the host, the Ray
    node) and its whole config as ``config.<section>.<field>`` columns."""
    return {DEVICE: device, HOSTNAME: platform.node(), NODE_ID: ray.get_runtime_context().get_node_id(),
            **{f"{CONFIG_PREFIX}{k}": to_plain(v) for k, v in cfg.flat().items()}}


def train_run(params: dict, arms: dict, experiment_dir: str, split: str = "", previews: int = 0,
              changing: tuple[str, ...] = ()) -> None:
    """Ray Tune function trainable of a retraining run (:mod:`search.runs`): a race's or ``train-best``'s.

    The run is ``params``' ``TRIAL_ID`` (a trial of the search, whose config ``arms`` holds) trained with seed
    ``params[SEED]`` to its last epoch, reporting every epoch as a search's trial does (and resuming from
    ``tune.get_checkpoint()`` the same way). At its last epoch it is tested on ``split`` (none: its last validation
    stands) and its per-view rows are recorded in the ledger (:mod:`results.runs`) before that epoch is reported; a
    run already recorded there returns at once, so a finished run is never trained again.

    Args:
        params: ``{TRIAL_ID, SEED, ROUND, PHASE, ARM}``: which run, and what it is part of (under ``RUN_PARAM``,
            as :mod:`search.runs` grids them).
        arms: source trial id -> ``{"config": TrainConfig.to_dict(), "segments": [[last epoch, {key: value}], ...]}``
            (segments: a population search's weight schedule; ``[]`` trains the config as it is).
        previews: meshes and previews of this many test views go with the run's config, metrics and curves to
            :func:`run_output_dir` of the experiment (a tested run's only).
        changing: config keys a schedule changes between segments.
    """
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    params = params.get(RUN_PARAM, params)
    trial_id, seed = str(params[TRIAL_ID]), int(params[SEED])
    if is_finished(experiment_dir, trial_id, seed):
        return
    arm = arms[trial_id]
    cfg = dataclasses.replace(from_dict(arm["config"], base=TrainConfig(), source=f"trial {trial_id}"), seed=seed)
    segments = [(int(end), dict(values)) for end, values in arm["segments"]] or [(cfg.optim.max_epochs, {})]
    epochs = segments[-1][0]
    device = str(resolve_device(cfg.device))
    run = {PHASE: params[PHASE], ARM: params[ARM], TRIAL_ID: trial_id, SEED: seed, ROUND: int(params[ROUND]),
           SPLIT: split or cfg.data.val_split, EPOCHS: epochs}
    extra = {**run, **_row_extra(cfg, device)}
    cfg = local_data(cfg)  # the smoke dataset: this node's copy when the driver's is on another host
    with _scratch() as workdir:
        resume_from = _restored(workdir)
        run_dir = workdir / "run"

        def on_epoch(metrics: dict, checkpoint_dir: Path, views: list[dict]) -> None:
            if metrics[EPOCH] < epochs:
                _report({**metrics, **extra}, checkpoint_dir, workdir)
                return
            # the run is recorded in the ledger here: its last epoch is reported without a checkpoint (the search
            # deletes a finished run's checkpoints: search.retention), a tested run's weights go with its outputs
            test = _test_run(cfg, checkpoint_dir, run_dir, experiment_dir, run, metrics, extra, split, previews, views)
            _report({**metrics, **extra, **test}, None, workdir)

        for end, values in segments:  # one segment, unless a population search changed weights during training
            segment = apply_params(cfg, values, f"trial {trial_id}'s schedule")
            segment = dataclasses.replace(segment, device=device,
                                          optim=dataclasses.replace(segment.optim, max_epochs=end))
            fit(segment, run_dir, on_epoch=on_epoch, resume_from=resume_from, progress=False, save_best=False,
                log=None, changing=changing)
            if (run_dir / CHECKPOINT_DIR / CHECKPOINT_FILE).is_file():
                resume_from = run_dir / CHECKPOINT_DIR


RUN_PARAM = "run"  # the one key of a retraining trial's params: the run it trains


def _test_run(cfg: TrainConfig, checkpoint_dir: Path, run_dir: Path, experiment_dir: str, run: dict, metrics: dict,
              extra: dict, split: str, previews: int, views: list[dict]) -> dict:
    """Test a run's last checkpoint on ``split``, write its previews and curves, record it in the ledger; returns
    its mean test figures (``test_column(stage, metric)``) for the last epoch's row. Without a ``split`` (a race's
    run, judged on validation) the last validation's per-view rows ``views`` are recorded, and nothing is tested."""
    last = {val_column(s, m): metrics[val_column(s, m)] for s in STAGES for m in METRICS}
    config = {k: v for k, v in extra.items() if k.startswith(CONFIG_PREFIX)}
    if not split:
        write_run(experiment_dir, run[TRIAL_ID], run[SEED], [{**run, **last, **config, **item} for item in views])
        return {}
    from p2m.checkpoint import checkpoint_file, final_weights, load_checkpoint, model_from_state, save_checkpoint
    from p2m.evaluate import evaluate, split_loader
    from p2m.predict import plot_curves, write_previews

    samples, loader = split_loader(cfg.data.root, split, cfg)
    device = resolve_device(extra[DEVICE])
    source = checkpoint_file(checkpoint_dir)
    state = load_checkpoint(source)  # read once: the model to test, and the weights to publish
    model, _ = model_from_state(state, str(source), device)  # the last epoch, as the search compared
    test = evaluate(model, loader, device)
    out = run_dir / "outputs"  # the run's config, metrics, curves, previews and weights, published beside the tables
    out.mkdir()
    save_checkpoint(out / WEIGHTS_FILE, final_weights(state))  # for p2m predict
    for name in (RUN_CONFIG_FILE, METRICS_FILE):
        shutil.copy2(run_dir / name, out / name)
    history = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines() if line.strip()]
    plot_curves(history, out / CURVES_FILE, title=f"{run[ARM]} (trial {run[TRIAL_ID]}), seed {run[SEED]}")
    if previews:
        write_previews(model.cpu(), cfg, samples[::max(1, len(samples) // previews)][:previews], out)
    _publish_dir(out, storage.join(experiment_dir, run_output_dir(run[ARM], run[SEED])))
    write_run(experiment_dir, run[TRIAL_ID], run[SEED], [{**run, **last, **config, **item} for item in test.items])
    return {test_column(s, m): test.means[stage_key(s, m)] for s in STAGES for m in METRICS}


def run_output_dir(arm: str, seed: int) -> str:
    """A run's previews and curves, under the experiment: ``train_best/seed<k>`` for the best configuration,
    ``train_best_<baseline>/seed<k>`` for a baseline's."""
    return f"{train_best_dir(None if arm == BEST_ARM else arm)}/seed{int(seed)}"


def _report(metrics: dict, checkpoint_dir: Path | None, workdir: Path) -> None:
    """Report one epoch with its checkpoint (if any); when Ray stops the trial here, park (see the module
    docstring)."""
    try:
        tune.report(metrics, checkpoint=None if checkpoint_dir is None else
                    tune.Checkpoint.from_directory(str(checkpoint_dir)))
    except SystemExit:  # Ray stops the trial: see the module docstring
        shutil.rmtree(workdir, ignore_errors=True)  # the checkpoint was persisted by report
        threading.Event().wait()


@contextlib.contextmanager
def _scratch():
    """A trial's scratch directory (named after its process: :func:`remove_stale_workdirs`), removed after."""
    remove_stale_workdirs()
    workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _restored(workdir: Path) -> Path | None:
    """The trial's latest checkpoint (after a restart), copied into ``workdir``; None for a new trial."""
    checkpoint = tune.get_checkpoint()
    return None if checkpoint is None else Path(checkpoint.to_directory(str(workdir / "restored")))


OWNER_FILE = "owner.txt"  # in each checkpoint: the trial that wrote it, and the epoch, one per line


def _parent(checkpoint_dir: Path, trial_id: str) -> dict:
    """When a population scheduler gave this trial another trial's checkpoint: ``{PARENT_TRIAL: that trial,
    PARENT_EPOCH: the checkpoint's epoch}``, reported with the first epoch trained from it, so that the analysis can
    follow a model back through the trials that trained it (:func:`results.trials.lineage`); else {}."""
    owner = checkpoint_dir / OWNER_FILE
    if not owner.is_file():
        return {}
    writer, epoch = owner.read_text().split()
    return {} if writer == trial_id else {PARENT_TRIAL: writer, PARENT_EPOCH: int(epoch)}


def _write_previews(cfg: TrainConfig, checkpoint_dir: Path, out: storage.Location, count: int) -> None:
    """Meshes and previews of ``count`` validation views, spread over the split; written to a temporary
    directory first, so a local ``out`` is whole or absent (on object storage, they are uploaded file by
    file)."""
    from p2m.checkpoint import load_model
    from p2m.data.layout import find_samples
    from p2m.predict import write_previews

    samples = find_samples(cfg.data.root, cfg.data.val_split)
    if not samples:
        return
    model, _ = load_model(checkpoint_dir, "cpu")
    tmp = Path(tempfile.mkdtemp(prefix=f".{storage.name_of(out)}."))
    try:
        write_previews(model, cfg, samples[::max(1, len(samples) // count)][:count], tmp)
        _publish_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish_dir(local: Path, out: storage.Location) -> None:
    """Put the directory ``local`` at ``out``: on a local disk whole or not at all (a copy beside it, renamed into
    place); on object storage, uploaded file by file."""
    if storage.is_remote(out):
        storage.upload_dir(local, out)
        return
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copytree(local, tmp, dirs_exist_ok=True)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


WORKDIR_PREFIX = "p2m-trial-"  # a trial's scratch directory: p2m-trial-<pid>-<random>, in the temporary directory


def remove_stale_workdirs(root: str | os.PathLike | None = None) -> list[Path]:
    """Remove the scratch directories of trials whose process is gone (killed, so its ``finally`` never ran;
    about 170 MB each on the ``cpu`` profile); returns them. A directory whose process still runs, or whose
    name carries no process id, is left alone.
    """
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        pid = path.name[len(WORKDIR_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def trial_resources(cpu: float, gpu: float) -> dict:
    """Ray resources of one trial: ``gpu`` may be a fraction (0.25: four trials share a GPU)."""
    if cpu <= 0 or gpu < 0:
        raise ValueError(f"resources: cpu must be > 0 and gpu >= 0, got cpu={cpu}, gpu={gpu}")
    return {"cpu": cpu, "gpu": gpu}

