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

import dataclasses
import logging
import os
import platform
import shutil
import tempfile
import threading
from pathlib import Path

import ray
from ray import tune

from p2m.config import TrainConfig, from_dict, to_plain
from p2m.names import CONFIG_PREFIX, PREVIEWS_DIR, VIEWS_DIR
from p2m.train import fit, resolve_device
from results import storage
from results.schema import ITERATION, PARENT_EPOCH, PARENT_TRIAL, TRIAL_ID
from results.store import VIEWS_KEY, ResultsWriter
from search.population import trial_params
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
    extra = {"device": device, "hostname": platform.node(), "node_id": ray.get_runtime_context().get_node_id(),
             **{f"{CONFIG_PREFIX}{k}": to_plain(v) for k, v in cfg.flat().items()}}
    remove_stale_workdirs()
    workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))
    try:
        resume_from, parent = None, {}
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            resume_from = Path(checkpoint.to_directory(str(workdir / "restored")))
            parent = _parent(resume_from, tune.get_context().get_trial_id())

        def on_epoch(metrics: dict, checkpoint_dir: Path, views: list[dict]) -> None:
            trial_id = tune.get_context().get_trial_id()
            (checkpoint_dir / OWNER_FILE).write_text(f"{trial_id}\n{metrics['epoch']}\n")  # whose: see _parent
            if experiment_dir and previews and metrics["epoch"] == cfg.optim.max_epochs:
                _write_previews(cfg, checkpoint_dir, storage.join(experiment_dir, PREVIEWS_DIR, trial_id), previews)
            if experiment_dir and val_per_view:
                writer = ResultsWriter(experiment_dir, flush_every=len(views), table=VIEWS_DIR, key=VIEWS_KEY)
                writer.extend([{TRIAL_ID: trial_id, ITERATION: metrics["epoch"], **row} for row in views])
            try:
                tune.report({**metrics, **extra, **parent}, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))
                parent.clear()  # said once, with the first epoch trained from it
            except SystemExit:  # Ray stops the trial: see the module docstring
                shutil.rmtree(workdir, ignore_errors=True)  # the checkpoint was persisted by report
                threading.Event().wait()

        fit(dataclasses.replace(cfg, device=device), workdir / "run", on_epoch=on_epoch, resume_from=resume_from,
            progress=False, save_best=False, log=None, changing=changing)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


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
    remote = storage.is_remote(out)
    if not remote:
        out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{storage.name_of(out)}.", dir=None if remote else out.parent))
    try:
        write_previews(model, cfg, samples[::max(1, len(samples) // count)][:count], tmp)
        if remote:
            storage.upload_dir(tmp, out)
        else:
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
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def trial_resources(cpu: float, gpu: float) -> dict:
    """Ray resources of one trial: ``gpu`` may be a fraction (0.25: four trials share a GPU)."""
    if cpu <= 0 or gpu < 0:
        raise ValueError(f"resources: cpu must be > 0 and gpu >= 0, got cpu={cpu}, gpu={gpu}")
    return {"cpu": cpu, "gpu": gpu}

