"""The Parquet store: atomic parts, keep-latest deduplication, compaction and merging by level (SIGKILLed too),
one-line errors."""
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest

from results.schema import ITERATION, TRIAL_ID
from results.parquet import (ResultsError, ResultsWriter, compact, list_parts, maintain, max_parts, part_level,
                           read_results, read_trials, remove_temporaries, write_trials)


def _row(trial, it, cd, **extra):
    return {TRIAL_ID: trial, ITERATION: it, "val_s3_cd": cd, "config.loss.w1_edge": 0.1, **extra}


def test_rows_round_trip_and_the_latest_duplicate_wins(tmp_path):
    w = ResultsWriter(tmp_path)
    for row in (_row("a", 1, 0.5), _row("a", 2, 0.4), _row("b", 1, 0.7, error="x"), _row("a", 2, 0.3)):
        w.append(row)
    assert w.rows_written == 4 and len(list((tmp_path / "results").glob("part-*.parquet"))) == 4
    raw = read_results(tmp_path, dedupe=False)
    assert len(raw) == 4
    df = read_results(tmp_path)
    assert list(zip(df[TRIAL_ID], df[ITERATION], df["val_s3_cd"])) == [("a", 1, 0.5), ("a", 2, 0.3), ("b", 1, 0.7)]
    assert df["error"].isna().tolist() == [True, True, False]  # columns of some rows only are kept


def test_compaction_leaves_one_deduplicated_file_readable_by_pyarrow(tmp_path):
    w = ResultsWriter(tmp_path, flush_every=2)
    for row in (_row("a", 1, 0.5), _row("a", 1, 0.45), _row("b", 1, 0.7)):
        w.append(row)
    w.flush()
    path = compact(tmp_path)
    assert list((tmp_path / "results").glob("*")) == [path]
    table = ds.dataset(tmp_path / "results").to_table().to_pandas()
    assert sorted(zip(table[TRIAL_ID], table["val_s3_cd"])) == [("a", 0.45), ("b", 0.7)]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "results").sort_values(TRIAL_ID).reset_index(drop=True),
                                  read_results(tmp_path))


def test_trials_table_is_replaced_whole(tmp_path):
    write_trials(tmp_path, [{TRIAL_ID: "b", "status": "RUNNING"}])
    write_trials(tmp_path, [{TRIAL_ID: "b", "status": "TERMINATED"}, {TRIAL_ID: "a", "status": "ERROR"}])
    assert read_trials(tmp_path)[[TRIAL_ID, "status"]].values.tolist() == [["a", "ERROR"], ["b", "TERMINATED"]]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_missing_and_corrupt_tables_are_one_line_errors(tmp_path):
    with pytest.raises(ResultsError, match="results: no results"):
        read_results(tmp_path)
    with pytest.raises(ResultsError, match="trials.parquet: no trials table"):
        read_trials(tmp_path)
    ResultsWriter(tmp_path).append(_row("a", 1, 0.5))
    bad = tmp_path / "results" / "part-0-0.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ResultsError, match=r"part-0-0.parquet: not a readable Parquet file") as err:
        read_results(tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="lacks training_iteration"):
        ResultsWriter(tmp_path).append({TRIAL_ID: "a"})


def test_merging_by_level_bounds_the_part_count_of_a_long_search(tmp_path):
    """600 results, one part each, some re-reported (a resumed trial); merged every `fanout` results as the search's
    callback does: the part count never passes the bound, and the rows equal a plain dict of the latest values."""
    fanout, top = 4, 3
    writer, latest, most = ResultsWriter(tmp_path), {}, 0
    for i in range(600):
        trial, epoch = f"t{i // 50}", i % 50 + 1
        if i % 7 == 0 and epoch > 1:  # a re-report of the previous epoch, after a resume
            writer.append(_row(trial, epoch - 1, -float(i)))
            latest[(trial, epoch - 1)] = -float(i)
        writer.append(_row(trial, epoch, float(i)))
        latest[(trial, epoch)] = float(i)
        if i % fanout == fanout - 1:
            maintain(tmp_path, fanout=fanout, top=top)
            parts = list_parts(tmp_path / "results")
            most = max(most, len(parts))
            assert len(parts) <= max_parts(fanout, top) == 10
    assert most == (fanout - 1) * (top - 1) + 1  # full levels below the top: the bound was approached, not avoided
    assert {part_level(p) for p in list_parts(tmp_path / "results")} >= {top}
    df = read_results(tmp_path)
    assert dict(zip(zip(df[TRIAL_ID], df[ITERATION]), df["val_s3_cd"])) == latest
    assert len(read_results(tmp_path, dedupe=False)) < 1.1 * len(latest)  # merges dropped the superseded rows


KILL_DURING_MERGE = """
import os, signal, sys
from results import parquet, storage

stage = sys.argv[2]
calls = {"replace": 0, "delete": 0}
if stage == "writing":  # killed with the merged part written under its temporary name, before the rename
    def replace(src, dst):
        os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
else:
    real_delete = storage.delete
    def delete(loc):  # killed before the first deletion of a merged input, or after the second
        if calls["delete"] == (0 if stage == "written" else 2):
            os.kill(os.getpid(), signal.SIGKILL)
        calls["delete"] += 1
        real_delete(loc)
    storage.delete = delete
parquet.compact(sys.argv[1])
"""


@pytest.mark.parametrize("stage", ["writing", "written", "deleting"])
def test_a_sigkill_during_a_merge_loses_and_duplicates_no_row(tmp_path, stage):
    writer = ResultsWriter(tmp_path)
    for i in range(12):
        writer.append(_row(f"t{i % 3}", i // 3 + 1, float(i)))
    writer.append(_row("t0", 4, -1.0))  # a re-report: the latest wins
    before = read_results(tmp_path)
    run = subprocess.run([sys.executable, "-c", KILL_DURING_MERGE, str(tmp_path), stage], capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    pd.testing.assert_frame_equal(read_results(tmp_path), before)  # every row exactly once, as before
    raw = read_results(tmp_path, dedupe=False)
    assert len(raw) > len(before) if stage != "writing" else len(raw) == len(before) + 1
    temporaries = list((tmp_path / "results").glob(".part-*.tmp"))
    assert bool(temporaries) == (stage == "writing")
    # what `p2m search resume` does first: the killed merge's leftovers go, the rows stay
    assert remove_temporaries(tmp_path, older_than_s=0) == len(temporaries)
    compact(tmp_path)
    pd.testing.assert_frame_equal(read_results(tmp_path, dedupe=False), before)
    assert len(list_parts(tmp_path / "results")) == 1


def test_a_writer_rolls_its_own_parts_up_from_memory(tmp_path, monkeypatch):
    writer = ResultsWriter(tmp_path)
    for i in range(5):
        writer.append(_row("a", i + 1, float(i)))
    assert writer.roll_up(fanout=6) is None and len(list_parts(tmp_path / "results")) == 5
    writer.append(_row("a", 5, -1.0))  # a re-report: both rows go up, readers keep the latest
    expected = read_results(tmp_path)
    monkeypatch.setattr("results.parquet._read_arrow", lambda path: pytest.fail("rolled up by reading"))
    part = writer.roll_up(fanout=6)
    monkeypatch.undo()
    assert list_parts(tmp_path / "results") == [part] and part_level(part) == 1
    pd.testing.assert_frame_equal(read_results(tmp_path), expected)
    assert pickle.loads(pickle.dumps(writer))._parts == []  # a snapshot holds no rows
