"""The Parquet store: atomic parts, keep-latest deduplication, compaction, one-line errors."""
import pandas as pd
import pyarrow.dataset as ds
import pytest

from results.schema import ITERATION, TRIAL_ID
from results.store import ResultsError, ResultsWriter, compact, read_results, read_trials, write_trials


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
