"""The Parquet tables of an experiment: written in atomic parts, read back deduplicated, compacted as they grow.

The experiment may be a local directory or a prefix on object storage (:mod:`results.storage`). Writers never
rewrite a file in place: each flush writes ``results/part-<ns>-<pid>.parquet`` whole (a temporary name and a
rename on a local disk; one upload on object storage), so a crash leaves only whole files. A result
re-reported after a resume (a trial restarted from a checkpoint older than its last row) is a second row with
the same (trial_id, training_iteration); readers keep the latest written.

File counts stay bounded while a search runs: :func:`maintain` merges parts by level, as a log-structured
store does. A part written by a writer is level 0; ``fanout`` parts of one level merge into one part of the next
(``part-L<level>-...``), up to ``TOP_LEVEL``, whose parts merge with each other. A writer merges its own level-0
parts from the rows it still holds (:meth:`ResultsWriter.roll_up`: a search's driver writes one part per
result, and reading them back would cost it more than writing them). A table never holds more than
:func:`max_parts` parts after ``maintain`` (for ``fanout`` 16: 46), and each row is rewritten about
``TOP_LEVEL`` times. A merge writes its part before it deletes its inputs: a process killed in between
leaves each row twice, in two parts, with the same write time, and readers (and the next merge) keep one.
:func:`compact` merges everything into one part (when a search ends and when it resumes).
Only pandas and pyarrow are used here.
"""
from __future__ import annotations

import io
import os
import time
from collections.abc import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from p2m.codec import to_plain
from p2m.names import RESULTS_DIR, TRIALS_FILE, VIEWS_DIR
from results import storage
from results.schema import ITERATION, KEY, TRIAL_ID, VIEW_KEY, WRITTEN_AT

VIEWS_KEY = KEY + VIEW_KEY  # a per-view row: trial, epoch, view


class ResultsError(ValueError):
    """A results table is missing or unreadable; the message names the path."""


class CorruptTableError(ValueError):
    """A trials table that is there but unusable (not Parquet, or without a column every row has); the message
    names the file and what is wrong. Not a ResultsError on purpose: readers take a ResultsError from
    :func:`read_trials` for "not written yet" (the driver died first) and rebuild the table from the result rows,
    which must not happen to a damaged file (a table is written whole or not at all, so damage is never a crash)."""


TOP_LEVEL = 3  # the level whose parts merge with each other (each row is rewritten about this many times)
FANOUT = 16  # parts of one level that merge into one of the next


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
        self.dir = storage.join(experiment_dir, table)
        self.flush_every, self.key = flush_every, key
        self._buffer: list[dict] = []
        self._parts: list[tuple[storage.Location, pa.Table]] = []  # level-0 parts written, with their rows
        self.rows_written = 0

    def __getstate__(self) -> dict:  # Ray snapshots the callback that holds this writer: not the rows
        return {**self.__dict__, "_parts": []}

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

    def flush(self) -> storage.Location | None:
        if not self._buffer:
            return None
        table = _to_table(self._buffer)
        path = storage.join(self.dir, _part_name(0))
        write_table_atomic(table, path)
        self._parts.append((path, table))
        self.rows_written += len(self._buffer)
        self._buffer = []
        return path

    def roll_up(self, fanout: int = FANOUT) -> storage.Location | None:
        """Once this writer has written ``fanout`` level-0 parts, merge them into one level-1 part from the rows
        it still holds (no reads), then delete them; returns the new part. :func:`maintain` merges the rest."""
        if len(self._parts) < fanout:
            return None
        paths, tables = zip(*self._parts)
        path = storage.join(self.dir, _part_name(1))
        write_table_atomic(pa.concat_tables(tables, promote_options="permissive"), path)
        for part in paths:
            storage.delete(part)
        self._parts = []
        return path


def read_results(experiment_dir: str | os.PathLike, dedupe: bool = True, table: str = RESULTS_DIR,
                 key: tuple[str, ...] = KEY) -> pd.DataFrame:
    """Every result row of an experiment, one per (trial_id, training_iteration) unless ``dedupe`` is False
    (``table`` and ``key`` name another dataset, as :func:`read_views` does).

    Raises:
        ResultsError: naming the directory or file, when there are no parts or one is unreadable.
    """
    root = storage.join(experiment_dir, table)
    parts = list_parts(root)
    if not parts:
        raise ResultsError(f"{root}: no results (no part-*.parquet files)")
    return _merged(parts, key, dedupe).sort_values(list(key), kind="stable").reset_index(drop=True)


def read_views(experiment_dir: str | os.PathLike) -> pd.DataFrame:
    """The per-view validation rows (``search.val_per_view``): one per trial, epoch and view."""
    return read_results(experiment_dir, table=VIEWS_DIR, key=VIEWS_KEY)


def max_parts(fanout: int = FANOUT, top: int = TOP_LEVEL) -> int:
    """The most parts a table holds after :func:`maintain`: fewer than ``fanout`` at each level below the top,
    one at the top."""
    return (fanout - 1) * top + 1


def list_parts(root: str | os.PathLike) -> list:
    """The parts of a dataset directory, by name."""
    return storage.list_files(root, prefix="part-", suffix=".parquet")


def part_level(part) -> int:
    """A part's level: 0 for a writer's part, ``n`` for ``part-L<n>-...``."""
    name = storage.name_of(part)
    return int(name.split("-")[1][1:]) if name.startswith("part-L") else 0


def maintain(experiment_dir: str | os.PathLike, table: str = RESULTS_DIR, key: tuple[str, ...] = KEY,
             fanout: int = FANOUT, top: int = TOP_LEVEL) -> int:
    """Merge parts by level so the dataset holds at most :func:`max_parts` of them; returns the parts merged.

    Only the parts listed on entry are touched: parts written meanwhile (trials write their per-view parts
    themselves) wait for the next call.
    """
    if fanout < 2 or top < 1:
        raise ValueError(f"fanout must be >= 2 and top >= 1, got {fanout} and {top}")
    root = storage.join(experiment_dir, table)
    by_level: dict[int, list] = {}
    for part in list_parts(root):
        by_level.setdefault(min(part_level(part), top), []).append(part)
    merged = 0
    for level in range(top + 1):
        parts = by_level.get(level, [])
        full = level < top and len(parts) >= fanout or level == top and len(parts) > 1
        if not full:
            continue
        new = _merge(root, parts, key, min(level + 1, top))
        merged += len(parts)
        if level + 1 <= top:
            by_level.setdefault(min(level + 1, top), []).append(new)
    return merged


def compact(experiment_dir: str | os.PathLike, table: str = RESULTS_DIR, key: tuple[str, ...] = KEY):
    """Rewrite a dataset as one deduplicated part (of the top level); the old parts go only after it is
    written. Returns the new part, or None when the dataset has no parts."""
    root = storage.join(experiment_dir, table)
    parts = list_parts(root)
    return _merge(root, parts, key, TOP_LEVEL) if parts else None


def remove_temporaries(experiment_dir: str | os.PathLike, table: str = RESULTS_DIR, older_than_s: float = 60.0) -> int:
    """Remove the temporary files of parts whose writer was killed mid-write (local disks only: an object store
    never shows a half-uploaded object), if older than ``older_than_s``; returns how many."""
    root = storage.join(experiment_dir, table)
    if storage.is_remote(root):
        return 0
    now, removed = time.time(), 0
    for path in storage.list_files(root, prefix=".part-", suffix=".tmp"):
        try:
            if now - path.stat().st_mtime > older_than_s:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    return removed


def _merge(root, parts: list, key: tuple[str, ...], level: int):
    """One part of ``level`` holding the deduplicated rows of ``parts``, written before they are deleted."""
    df = _merged(parts, key, dedupe=True)
    path = storage.join(root, _part_name(level))
    write_table_atomic(pa.Table.from_pandas(df, preserve_index=False), path)
    for part in parts:
        if str(part) != str(path):
            storage.delete(part)
    return path


def _merged(parts: list, key: tuple[str, ...], dedupe: bool) -> pd.DataFrame:
    # concatenated as Arrow tables, converted once (a pandas frame per part costs more than reading it)
    tables = [_read_arrow(p) for p in parts]
    for part, table in zip(parts, tables):
        _require_columns(table.column_names, (*key, WRITTEN_AT) if dedupe else key, part, ResultsError)
    df = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    if dedupe and len(df):
        df = df.sort_values(WRITTEN_AT, kind="stable").drop_duplicates(list(key), keep="last")
    return df


def _part_name(level: int) -> str:
    tag = f"L{level}-" if level else ""
    return f"part-{tag}{time.time_ns()}-{os.getpid()}.parquet"


def write_trials(experiment_dir: str | os.PathLike, trials: pd.DataFrame | Iterable[dict]) -> storage.Location:
    """Replace ``TRIALS_FILE`` (one row per trial) atomically."""
    trials = trials if isinstance(trials, pd.DataFrame) else pd.DataFrame(list(trials))
    if trials.empty:
        raise ValueError("no trials to write")
    path = storage.join(experiment_dir, TRIALS_FILE)
    write_table_atomic(pa.Table.from_pandas(trials, preserve_index=False), path)
    return path


def read_trials(experiment_dir: str | os.PathLike) -> pd.DataFrame:
    """The trials table (one row per trial), by trial id.

    Raises:
        ResultsError: naming the file, when there is none.
        CorruptTableError: naming the file, when it is not a readable Parquet file or has no trial_id column.
    """
    path = storage.join(experiment_dir, TRIALS_FILE)
    if not storage.is_file(path):
        raise ResultsError(f"{path}: no trials table")
    try:
        table = read_table(path)
    except ResultsError as exc:
        raise CorruptTableError(str(exc)) from None
    _require_columns(table.columns, (TRIAL_ID,), path, CorruptTableError)
    return table.sort_values(TRIAL_ID, kind="stable").reset_index(drop=True)


def write_table_atomic(table: pa.Table, path: str | os.PathLike) -> None:
    """Write ``table`` to ``path`` (local or remote), whole or not at all."""
    sink = io.BytesIO()
    pq.write_table(table, sink)
    storage.write_bytes(path, sink.getvalue())


def _to_table(rows: list[dict]) -> pa.Table:
    columns: dict[str, list] = {}
    for row in rows:  # union of the rows' keys, in first-seen order
        for key in row:
            columns.setdefault(key, [])
    data = {key: [to_plain(row.get(key)) for row in rows] for key in columns}
    return pa.Table.from_pydict(data)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """One Parquet file as a DataFrame, or a one-line ResultsError naming it."""
    return _read_arrow(path).to_pandas()


def _require_columns(columns, required: tuple[str, ...], path, error: type[ValueError]) -> None:
    missing = [c for c in required if c not in set(columns)]
    if missing:
        raise error(f"{path}: not a table of this project (no column {missing[0]})")


def _read_arrow(path: str | os.PathLike) -> pa.Table:
    try:
        # one file: ParquetFile reads it in half the time read_table takes (no dataset discovery)
        return pq.ParquetFile(io.BytesIO(storage.read_bytes(path)) if storage.is_remote(path) else path).read()
    except (OSError, pa.ArrowException) as exc:
        raise ResultsError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0][:200]})") from None


__all__ = ["ITERATION", "CorruptTableError", "ResultsError", "ResultsWriter", "compact", "maintain", "max_parts", "read_results",
           "read_table", "read_trials", "read_views", "remove_temporaries", "write_trials"]
