"""Reading and writing the ShapeNet-P2M ``.dat`` files.

A ``.dat`` file is a Python-2 pickle (protocol 1/2 opcodes) of a float32 array of shape (P, 6):
xyz and unit normal of each ground-truth point in the camera frame of one view. A pickle can run
arbitrary code when it is loaded, so these files are never given to the plain unpickler:
:class:`RestrictedUnpickler` resolves only the globals that numpy array reconstruction needs and
refuses everything else before it is called.
"""
from __future__ import annotations

import io
import os
import pickle
import stat
import struct
from pathlib import Path

import numpy as np

from p2m.atomic import atomic_write_bytes
from p2m.data.errors import DataError

# The globals an array pickle needs, under numpy 1.x and numpy 2.x module names: `_reconstruct`
# (protocols 0-4), `_frombuffer` (protocol 5), and the two ways Python 3 writes `bytes` at protocol 2
# (`_codecs.encode` of a str, `bytes()` when empty). None of them can run code.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("__builtin__", "bytes"),
    ("builtins", "bytes"),
}
_NUMPY2_NAMES = {"numpy.core.multiarray": "numpy._core.multiarray", "numpy.core.numeric": "numpy._core.numeric"}

NORMAL_TOLERANCE = 1e-2  # | |n| - 1 | allowed for a stored unit normal
# the largest file read: a view's ground truth is about 0.2 MB (9,200 points), the ellipsoid template 0.9 MB
MAX_BYTES = 64 << 20


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays (and tuples, lists, dicts of them) and nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name} (only numpy arrays are allowed)")
        if module in _NUMPY2_NAMES and hasattr(np, "_core"):  # numpy 2 moved them; the same functions
            module = _NUMPY2_NAMES[module]
        return super().find_class(module, name)


def load_pickle(path: str | os.PathLike):
    """Unpickle a ``.dat`` file with :class:`RestrictedUnpickler` (Python-2 strings read as latin-1).

    Raises:
        DataError: the file is missing, not a regular file (a FIFO, a device, a link to one), larger than
            ``MAX_BYTES``, truncated, not a pickle, or asks for anything but numpy arrays.
    """
    path = Path(path)
    data = _read_regular_file(path, MAX_BYTES)
    if not data:
        raise DataError(path, "empty file")
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise DataError(path, f"not a valid array pickle: {exc}") from None
    except (EOFError, ValueError, TypeError, struct.error, IndexError, KeyError, AttributeError) as exc:
        raise DataError(path, f"truncated or corrupt pickle ({type(exc).__name__}: {exc})") from None


def read_dat(path: str | os.PathLike) -> np.ndarray:
    """Read and validate one view's ground truth.

    Returns:
        FloatTensor-like ndarray (P, 6), float32: xyz in the camera frame, then the unit normal.

    Raises:
        DataError: naming the file, if the array is not (P, 6) float with P >= 1, has non-finite
            values, or has normals whose length differs from 1 by more than ``NORMAL_TOLERANCE``.
    """
    array = load_pickle(path)
    return validate_points(array, path)


def validate_points(array, path) -> np.ndarray:
    """Check a ground-truth array (P, 6) and return it as float32; raise DataError naming ``path``."""
    if not isinstance(array, np.ndarray):
        raise DataError(path, f"expected a numpy array, got {type(array).__name__}")
    if array.ndim != 2 or array.shape[1] != 6:
        raise DataError(path, f"expected shape (N, 6), got {tuple(array.shape)}")
    if array.shape[0] < 1:
        raise DataError(path, "no points (N = 0)")
    if array.dtype.kind != "f":
        raise DataError(path, f"expected a float array, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=1).sum())
        raise DataError(path, f"{bad} of {array.shape[0]} points have NaN or infinite values")
    lengths = np.linalg.norm(array[:, 3:].astype(np.float64), axis=1)
    worst = float(np.abs(lengths - 1.0).max())
    if worst > NORMAL_TOLERANCE:
        raise DataError(path, f"normals are not unit length (worst |n| = {lengths[np.argmax(np.abs(lengths - 1))]:.4f})")
    return np.ascontiguousarray(array, dtype=np.float32)


def write_dat(path: str | os.PathLike, points: np.ndarray) -> None:
    """Write a (P, 6) array as the Pixel2Mesh authors did: a Python-2 pickle of a float32 array.

    The bytes match the distributed files opcode for opcode (``numpy.core.multiarray._reconstruct``,
    protocol-1 opcodes, the data as a binary string), so tools written for the original data read
    them. The file is written under a temporary name and renamed, so it is never half-written.
    """
    points = validate_points(np.asarray(points), path)
    atomic_write_bytes(path, _array_pickle_py2(points))


def _array_pickle_py2(array: np.ndarray) -> bytes:
    """The exact byte stream numpy 1.x under Python 2 produced for ``pickle.dump(array, f, 2)``."""
    array = np.ascontiguousarray(array, dtype="<f4")
    out = io.BytesIO()
    out.write(b"cnumpy.core.multiarray\n_reconstruct\nq\x01(cnumpy\nndarray\nq\x02(K\x00tU\x01btRq\x03(K\x01(")
    for dim in array.shape:
        out.write(_binint(dim))
    out.write(b"tcnumpy\ndtype\nq\x04(U\x02f4K\x00K\x01tRq\x05(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbI00\n")
    payload = array.tobytes()
    out.write(b"T" + struct.pack("<I", len(payload)) + payload)
    out.write(b"tb.")
    return out.getvalue()


def _binint(value: int) -> bytes:
    if value < 0x100:
        return b"K" + struct.pack("<B", value)
    if value < 0x10000:
        return b"M" + struct.pack("<H", value)
    return b"J" + struct.pack("<i", value)


def _read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path`` if it is a regular file (after symlinks) of at most ``max_bytes``.

    It is checked with ``stat`` before it is opened (opening a FIFO blocks; /dev/zero never ends), opened
    non-blocking and checked again on the open descriptor (it may have been replaced in between), and read
    no further than ``max_bytes`` + 1.

    Raises:
        DataError: naming the file, when it is missing, not a regular file, too large, or unreadable.
    """
    try:
        _check_regular(path, os.stat(path), max_bytes)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(fd, "rb") as f:
            _check_regular(path, os.fstat(f.fileno()), max_bytes)
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise DataError(path, "file is missing") from None
    except OSError as exc:
        raise DataError(path, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise DataError(path, f"larger than the {max_bytes} bytes a .dat file may have")
    return data


def _check_regular(path: Path, st: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a character device" if stat.S_ISCHR(st.st_mode)
                else "a block device" if stat.S_ISBLK(st.st_mode) else "a directory" if stat.S_ISDIR(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "special")
        raise DataError(path, f"not a regular file ({kind})")
    if st.st_size > max_bytes:
        raise DataError(path, f"{st.st_size} bytes, larger than the {max_bytes} a .dat file may have")
