import pickle
import struct

import numpy as np
import pytest

from p2m.data import DataError, load_pickle, read_dat, write_dat
from p2m.data.datfile import NORMAL_TOLERANCE


def _real_dats(sample_dir):
    return sorted(sample_dir.glob("02691156/*/*.dat"))


def test_real_views_load(sample_dir):
    dats = _real_dats(sample_dir)
    assert len(dats) == 25
    for path in dats:
        gt = read_dat(path)
        assert gt.dtype == np.float32 and gt.shape[1] == 6
        assert 7000 <= gt.shape[0] <= 9500
        assert (gt[:, 2] < 0).all(), "camera frame: every point is in front of the camera"
        np.testing.assert_allclose(np.linalg.norm(gt[:, 3:], axis=1), 1.0, atol=1e-3)


def test_restricted_reader_matches_plain_unpickler_on_real_files(sample_dir):
    # the reference: the stdlib unpickler on files we trust (never done on user data)
    for path in _real_dats(sample_dir)[:3]:
        with open(path, "rb") as f:
            reference = pickle.load(f, encoding="latin1")
        np.testing.assert_array_equal(read_dat(path), reference)


def test_written_file_is_byte_identical_to_the_authors(sample_dir, tmp_path):
    for path in _real_dats(sample_dir):
        out = tmp_path / "copy.dat"
        write_dat(out, read_dat(path))
        assert out.read_bytes() == path.read_bytes(), path


def test_template_loads_with_the_restricted_unpickler(sample_dir):
    info = load_pickle(sample_dir / "ellipsoid" / "info_ellipsoid.dat")
    assert isinstance(info, tuple)
    assert info[0].shape == (156, 3)


def test_python3_pickles_of_arrays_are_accepted(tmp_path):
    points = np.zeros((4, 6), np.float32)
    points[:, 3] = 1.0
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}.dat"
        path.write_bytes(pickle.dumps(points, protocol=protocol))
        np.testing.assert_array_equal(read_dat(path), points)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_hostile_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.dat"
    path.write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    with pytest.raises(DataError, match=r"evil\.dat: .*refused global (__builtin__|builtins)\.exec"):
        read_dat(path)
    assert not marker.exists()
    # the classic hand-written one: os.system
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(DataError, match=r"refused global os\.system"):
        read_dat(path)
    assert not marker.exists()


def test_hostile_object_inside_an_array_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    arr = np.empty(1, dtype=object)
    arr[0] = _RunsCode(marker)
    path = tmp_path / "objarray.dat"
    path.write_bytes(pickle.dumps(arr, protocol=2))
    with pytest.raises(DataError, match=r"refused global (__builtin__|builtins)\.exec"):
        read_dat(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((5, 3), np.float32), r"expected shape \(N, 6\), got \(5, 3\)"),
        (np.zeros((2, 3, 6), np.float32), r"expected shape \(N, 6\), got \(2, 3, 6\)"),
        (np.zeros((0, 6), np.float32), r"no points"),
        (np.ones((3, 6), np.int32), r"expected a float array, got dtype int32"),
        (np.full((3, 6), np.nan, np.float32), r"3 of 3 points have NaN"),
        (np.ones((3, 6), np.float32), r"normals are not unit length"),
        ([1.0, 2.0], r"expected a numpy array, got list"),
    ],
)
def test_invalid_contents(tmp_path, array, message):
    path = tmp_path / "bad.dat"
    path.write_bytes(pickle.dumps(array, protocol=2))
    with pytest.raises(DataError, match=message) as info:
        read_dat(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_normal_tolerance_boundary(tmp_path):
    gt = np.zeros((2, 6), np.float32)
    gt[:, 3] = 1 + NORMAL_TOLERANCE / 2
    path = tmp_path / "ok.dat"
    path.write_bytes(pickle.dumps(gt, protocol=2))
    read_dat(path)


def test_truncated_and_missing_files(sample_dir, tmp_path):
    data = _real_dats(sample_dir)[0].read_bytes()
    for cut in (0, 10, 100, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{cut}.dat"
        path.write_bytes(data[:cut])
        with pytest.raises(DataError, match=rf"cut{cut}\.dat: (empty file|.*truncated)"):
            read_dat(path)
    with pytest.raises(DataError, match=r"nothere\.dat: file is missing"):
        read_dat(tmp_path / "nothere.dat")


def test_write_refuses_bad_arrays_and_leaves_nothing(tmp_path):
    path = tmp_path / "out.dat"
    with pytest.raises(DataError, match="expected shape"):
        write_dat(path, np.zeros((3, 4)))
    assert list(tmp_path.iterdir()) == []


def test_large_counts_use_4_byte_ints(tmp_path):
    gt = np.zeros((70_000, 6), np.float32)
    gt[:, 5] = 1
    path = tmp_path / "big.dat"
    write_dat(path, gt)
    np.testing.assert_array_equal(read_dat(path), gt)
    assert b"J" + struct.pack("<i", 70_000) in path.read_bytes()[:120]


def test_atomic_write_gives_the_mode_open_would_and_leaves_no_temporaries(tmp_path):
    import os

    from p2m.atomic import atomic_write_bytes

    target = tmp_path / "sub" / "out.bin"
    assert atomic_write_bytes(target, b"one") == target
    atomic_write_bytes(target, b"two")
    mask = os.umask(0)
    os.umask(mask)
    assert target.read_bytes() == b"two"
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]


def test_data_errors_survive_pickling_and_copying():
    import copy
    import pickle

    from p2m.data.errors import DataError

    err = DataError("/x/01.dat", "truncated")
    for clone in (pickle.loads(pickle.dumps(err)), copy.copy(err)):
        assert str(clone) == "/x/01.dat: truncated" and clone.path == "/x/01.dat" and clone.problem == "truncated"
