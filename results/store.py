"""The Parquet tables of an experiment: written in atomic parts, read back deduplicated.

Writers never rewrite a file in place: each flush writes ``results/part-<ns>-<pid>.parquet`` through a
temporary name and a rename, so a crash leaves only whole files. A result re-reported after a resume
(a trial restarted from a checkpoint older than its last row) is a second row with the same
(trial_id, training_iteration); readers keep the latest written, and :func:`compact` rewrites the
dataset as one file without duplicates. Only pandas and pyarrow are used here.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from p2m.atomic import atomic_path
from p2m.names import RESULTS_DIR, TRIALS_FILE, VIEWS_DIR
from results.schema import ITERATION, KEY, TRIAL_ID, VIEW_KEY, WRITTEN_AT

VIEWS_KEY = KEY + VIEW_KEY  # a per-view row: trial, epoch, view


class ResultsError(ValueError):
    """A results table is missing or unreadable; the message names the path."""


class ResultsWriter:
    """Appends rows to a Parquet dataset of the experiment (``RESULTS_DIR`` unless ``table`` says otherwise) in
    parts.

    Args:
        experiment_dir: the experiment directory (created).
        flush_every: rows buffered before a part is written (1 = a part per result: nothing is lost
            when the driver dies; :func:`compact` merges the parts afterwards).
        table: the dataset's directory in the experiment (``VIEWS_DIR`` for per-view rows).
        key: the columns every row must have, which identify it.
    """

    def __init__(self, experiment_dir: str | os.PathLike, flush_every: int = 1, table: str = RESULTS_DIR,
                 key: tuple[str, ...] = KEY):
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}")
        self.dir = Path(experiment_dir) / table
        self.dir.mkdir(parents=True, exist_ok=True)
        self.flush_every, self.key = flush_every, key
        self._buffer: list[dict] = []
        self.rows_written = 0

    def append(self, row: dict) -> None:
        self.extend([row])

    def extend(self, rows: list[dict]) -> None:
        """Buffer ``rows`` (written together, in one part, when the buffer is full)."""
        now = time.time()
        for row in rows:
            missing = [k for k in self.key if k not in row]
            if missing:
                raise ValueError(f"result row lacks {', '.join(missing)}")
            self._buffer.append({**row, WRITTEN_AT: now})
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def flush(self) -> Path | None:
        if not self._buffer:
            return None
        table = _to_table(self._buffer)
        path = self.dir / f"part-{time.time_ns()}-{os.getpid()}.parquet"
        write_table_atomic(table, path)
        self.rows_written += len(self._buffer)
        self._buffer = []
        return path


def read_results(experiment_dir: str | os.PathLike, dedupe: bool = True, table: str = RESULTS_DIR,
                 key: tuple[str, ...] = KEY) -> pd.DataFrame:
    """Every result row of an experiment, one per (trial_id, training_iteration) unless ``dedupe`` is False
    (``table`` and ``key`` name another dataset, as :func:`read_views` does).

    Raises:
        ResultsError: naming the directory or file, when there are no parts or one is unreadable.
    """
    root = Path(experiment_dir) / table
    parts = sorted(root.glob("part-*.parquet"))
    if not parts:
        raise ResultsError(f"{root}: no results (no part-*.parquet files)")
    frames = [read_table(p) for p in parts]
    df = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else frames[0]
    if dedupe and len(df):
        df = df.sort_values(WRITTEN_AT, kind="stable").drop_duplicates(list(key), keep="last")
    return df.sort_values(list(key), kind="stable").reset_index(drop=True)


def read_views(experiment_dir: str | os.PathLike) -> pd.DataFrame:
    """The per-view validation rows (``search.val_per_view``): one per trial, epoch and view."""
    return read_results(experiment_dir, table=VIEWS_DIR, key=VIEWS_KEY)


def compact(experiment_dir: str | os.PathLike, table: str = RESULTS_DIR, key: tuple[str, ...] = KEY) -> Path:
    """Rewrite a dataset as one deduplicated part; the old parts go only after it is written."""
    root = Path(experiment_dir) / table
    old = sorted(root.glob("part-*.parquet"))
    df = read_results(experiment_dir, table=table, key=key)
    path = root / f"part-{time.time_ns()}-{os.getpid()}.parquet"
    write_table_atomic(pa.Table.from_pandas(df, preserve_index=False), path)
    for p in old:
        if p != path:
            p.unlink(missing_ok=True)
    return path


def write_trials(experiment_dir: str | os.PathLike, trials: pd.DataFrame | Iterable[dict]) -> Path:
    """Replace ``TRIALS_FILE`` (one row per trial) atomically."""
    trials = trials if isinstance(trials, pd.DataFrame) else pd.DataFrame(list(trials))
    if trials.empty:
        raise ValueError("no trials to write")
    path = Path(experiment_dir) / TRIALS_FILE
    write_table_atomic(pa.Table.from_pandas(trials, preserve_index=False), path)
    return path


def read_trials(experiment_dir: str | os.PathLike) -> pd.DataFrame:
    path = Path(experiment_dir) / TRIALS_FILE
    if not path.is_file():
        raise ResultsError(f"{path}: no trials table")
    return read_table(path).sort_values(TRIAL_ID, kind="stable").reset_index(drop=True)


def write_table_atomic(table: pa.Table, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _to_table(rows: list[dict]) -> pa.Table:
    columns: dict[str, list] = {}
    for row in rows:  # union of the rows' keys, in first-seen order
        for key in row:
            columns.setdefault(key, [])
    data = {key: [_plain(row.get(key)) for row in rows] for key in columns}
    return pa.Table.from_pydict(data)


def _plain(value):
    if isinstance(value, tuple):
        return list(value)
    return value


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """One Parquet file as a DataFrame, or a one-line ResultsError naming it."""
    try:
        return pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowException) as exc:
        raise ResultsError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0][:200]})") from None


__all__ = ["ITERATION", "ResultsError", "ResultsWriter", "compact", "read_results", "read_table", "read_trials",
           "read_views", "write_trials"]
