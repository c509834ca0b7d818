"""The pre-flight: before a search's (or a retraining phase's) first trial, every alive node is asked whether it
can read the dataset and write to the experiment's storage.

A trial reads the dataset from its own node's disk and writes its checkpoints to the experiment's storage from its
own node. A node that cannot errors every trial Ray places on it, and the search goes on with the others: on a
cluster with the data on the head only, two trials of three errored and no line said which node lacked it
(issue 29). So a small task pinned to each alive node (``NodeAffinitySchedulingStrategy(soft=False)``, no CPU
asked, so it runs beside anything) checks both, and the search is refused in one line naming the first node that
cannot, and the path::

    node 10.0.0.3 (host-b): /data/shapenet: dataset directory does not exist (every node reads the dataset
    from its own disk)

The smoke test's own dataset (``data.smoke``) is not checked: a trial makes it on a node that lacks it
(:mod:`search.smoke`). A node that joins after the pre-flight is not checked.
"""
from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import Sequence

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from p2m.config import DataConfig
from p2m.data.errors import DataError
from p2m.data.layout import find_samples
from results import storage

DATA_HINT = "every node reads the dataset from its own disk"
STORAGE_HINT = "every node writes its trials' checkpoints there: a shared file system or object storage"


def preflight(data_root: str, storage_path: storage.Location, splits: Sequence[str] = ("train", "val"),
              skip_data: bool = False, timeout_s: float = 120.0) -> None:
    """Check on every alive node of the Ray this driver is connected to that the first sample of each of
    ``splits`` under ``data_root`` is readable (unless ``skip_data``) and that ``storage_path`` (a directory that
    exists: the experiment's) takes a new file or object, which is deleted again.

    Raises:
        ValueError: one line naming the first node that cannot (its address and host name), the path and why;
            and how many other nodes cannot either.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    check = ray.remote(num_cpus=0, max_retries=0)(_check_node)
    refs = [check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
        "" if skip_data else str(data_root), tuple(splits), str(storage_path)) for node in nodes]
    ready, late = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    for ref in late:
        ray.cancel(ref, force=True)
    problems = []
    for node, ref in zip(nodes, refs):
        if ref in late:
            problem = f"did not answer the pre-flight within {timeout_s:g} s"
        else:
            try:
                problem = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the node died, or its worker could not start
                problem = f"the pre-flight task failed: {_first_line(exc)}"
        if problem:
            problems.append(f"node {_node_name(node)}: {problem}")
    if problems:
        others = f" (and {len(problems) - 1} other node(s))" if len(problems) > 1 else ""
        raise ValueError(problems[0] + others)


def preflight_config(data: DataConfig, storage_path: storage.Location, test_split: str = "") -> None:
    """:func:`preflight` of a search's or a phase's runs: the dataset's training and validation splits, and
    ``test_split`` when one is given; the smoke test's own dataset is not checked (each trial makes it)."""
    splits = tuple(dict.fromkeys(s for s in (data.train_split, data.val_split, test_split) if s))
    preflight(data.root, storage_path, splits, skip_data=data.smoke)


def _check_node(data_root: str, splits: tuple[str, ...], storage_path: str) -> str | None:
    """On the node it runs on: what it cannot do (a path and why, one line), or None."""
    if data_root:
        problem = _data_problem(data_root, splits)
        if problem:
            return f"{problem} ({DATA_HINT})"
    problem = _storage_problem(storage_path)
    return f"{problem} ({STORAGE_HINT})" if problem else None


def _data_problem(data_root: str, splits: tuple[str, ...]) -> str | None:
    """The dataset as training finds it (:func:`p2m.data.layout.find_samples`), and the first sample of each split
    opened and read."""
    try:
        for split in splits:
            sample = find_samples(data_root, split)[0]
            for path in (sample.dat_path, sample.image_path):
                with open(path, "rb") as f:
                    f.read(1)
    except DataError as exc:
        return str(exc)
    except OSError as exc:
        return f"{exc.filename}: {exc.strerror or type(exc).__name__}"
    return None


def _storage_problem(storage_path: str) -> str | None:
    """A new file (or object) written in ``storage_path`` and deleted again."""
    loc = storage.location(storage_path)
    if storage.is_remote(loc):
        probe = storage.join(loc, f".p2m-preflight-{uuid.uuid4().hex}")
        try:
            storage.write_bytes(probe, b"p2m pre-flight\n")
            storage.delete(probe)
        except (OSError, ValueError) as exc:  # StorageError is a ValueError
            return f"{loc}: not writable ({_first_line(exc).removeprefix(f'{probe}: ')})"
        return None
    path = Path(loc)
    if not path.is_dir():
        return f"{path}: {'not a directory' if path.exists() else 'does not exist on this node'}"
    try:
        fd, name = tempfile.mkstemp(prefix=".p2m-preflight-", dir=path)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return f"{path}: not writable ({exc.strerror or type(exc).__name__})"
    return None


def _node_name(node: dict) -> str:
    """``10.0.0.3 (host-b)``: a node of ``ray.nodes()`` by its address and host name."""
    address, host = node.get("NodeManagerAddress", "?"), node.get("NodeManagerHostname", "")
    return f"{address} ({host})" if host and host != address else address


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


__all__ = ["preflight", "preflight_config"]
