"""Where an experiment lives: a local directory, or a prefix on object storage (``s3://bucket/prefix``,
``gs://bucket/prefix``) reached through pyarrow's file systems, as Ray Tune reaches it.

A location is a ``Path`` when local and a URI string when remote (``Path`` would collapse ``s3://`` to ``s3:/``):
:func:`join` keeps that apart. Credentials and endpoints come from the usual environment variables, read by
pyarrow: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION`` and
``AWS_ENDPOINT_URL`` (an S3-protocol server other than AWS: MinIO, Ceph, a test server) for S3;
``GOOGLE_APPLICATION_CREDENTIALS`` for Google Cloud Storage.

Writes are whole or absent: a local file is written under a temporary name and renamed; an object store
makes an object visible only when its upload completes. Only pyarrow and the standard library are used.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs

from p2m.atomic import atomic_write_bytes

REMOTE_SCHEMES = ("s3", "gs", "gcs")

Location = Path | str  # a local path, or a remote URI string

NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")  # an experiment's name: one path component


class StorageError(ValueError):
    """Object storage refused or could not be reached (no such bucket, no credentials, no server); the message
    names the location and says why in one line."""


@contextlib.contextmanager
def _reaching(loc) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"{loc}: {reason[:300]}") from None


def is_remote(location: str | os.PathLike) -> bool:
    """Whether ``location`` is an object-storage URI (``s3://``, ``gs://``, ``gcs://``)."""
    if isinstance(location, os.PathLike):
        return False
    scheme, sep, _ = str(location).partition("://")
    if sep and scheme.lower() not in REMOTE_SCHEMES and scheme.lower() != "file":
        raise ValueError(f"{location}: unsupported storage scheme {scheme!r} (use a local path, s3:// or gs://)")
    return bool(sep) and scheme.lower() in REMOTE_SCHEMES


def location(value: str | os.PathLike) -> Location:
    """``value`` as a location: a remote URI without its trailing slash, else an absolute local ``Path``."""
    if is_remote(value):
        uri = str(value).rstrip("/")
        if not uri.partition("://")[2]:
            raise ValueError(f"{value}: missing bucket name")
        return uri
    text = str(value)
    return Path(text[len("file://"):] if text.startswith("file://") else text).expanduser().resolve()


def join(base: str | os.PathLike, *names: str) -> Location:
    """``base/name/...``: a URI string when ``base`` is remote, else a ``Path``."""
    if is_remote(base):
        return "/".join([str(base).rstrip("/"), *(n.strip("/") for n in names)])
    return Path(base).joinpath(*names)


def check_name(name: str, what: str = "experiment name") -> str:
    """``name`` when it is one path component of letters, digits, ``-``, ``_`` and ``.``, not starting with a dot
    (at most 128 characters): what an experiment directory under ``storage.path`` may be called.

    Raises:
        ValueError: naming ``what`` and the name.
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{what} {name!r}: use letters, digits, '-', '_' and '.', not starting with a dot (one "
                         "directory under the storage path)")
    return name


def experiment(base: str | os.PathLike, name: str) -> Location:
    """The experiment ``name`` under the storage path ``base`` (a checked name: it cannot leave ``base``)."""
    return join(location(base), check_name(name))


def name_of(loc: str | os.PathLike) -> str:
    """The last component of a location."""
    return str(loc).rstrip("/").rsplit("/", 1)[-1] if is_remote(loc) else Path(loc).name


def parent_of(loc: str | os.PathLike) -> Location:
    return str(loc).rstrip("/").rsplit("/", 1)[0] if is_remote(loc) else Path(loc).parent


def filesystem(loc: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """pyarrow's file system for ``loc`` and the path in it."""
    if not is_remote(loc):
        return pafs.LocalFileSystem(), str(Path(loc))
    scheme, _, rest = str(loc).partition("://")
    return _remote_fs(scheme.lower()), rest.rstrip("/")


@functools.lru_cache(maxsize=None)
def _remote_fs(scheme: str) -> pafs.FileSystem:
    # one client per scheme and process (a client per call costs a credentials lookup each time)
    fs, _ = pafs.FileSystem.from_uri(f"{scheme}://bucket")
    return fs


def write_bytes(loc: str | os.PathLike, data: bytes) -> Location:
    """Write ``data`` to ``loc``, whole or not at all; returns ``loc``."""
    if not is_remote(loc):
        return atomic_write_bytes(loc, data)
    fs, path = filesystem(loc)
    with _reaching(loc), fs.open_output_stream(path) as out:
        out.write(data)
    return loc


def read_bytes(loc: str | os.PathLike) -> bytes:
    """The bytes of ``loc``.

    Raises:
        FileNotFoundError: naming ``loc``.
    """
    if not is_remote(loc):
        return Path(loc).read_bytes()
    fs, path = filesystem(loc)
    try:
        with _reaching(loc), fs.open_input_stream(path) as stream:
            return stream.readall()
    except FileNotFoundError:
        raise FileNotFoundError(f"{loc}: no such object") from None


def exists(loc: str | os.PathLike) -> bool:
    if not is_remote(loc):
        return Path(loc).exists()
    fs, path = filesystem(loc)
    with _reaching(loc):
        return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_file(loc: str | os.PathLike) -> bool:
    if not is_remote(loc):
        return Path(loc).is_file()
    fs, path = filesystem(loc)
    with _reaching(loc):
        return fs.get_file_info(path).type == pafs.FileType.File


def list_files(directory: str | os.PathLike, prefix: str = "", suffix: str = "") -> list[Location]:
    """The files directly in ``directory`` whose names start with ``prefix`` and end with ``suffix``, sorted
    by name; [] when the directory does not exist."""
    if not is_remote(directory):
        root = Path(directory)
        if not root.is_dir():
            return []
        return sorted(p for p in root.iterdir() if p.name.startswith(prefix) and p.name.endswith(suffix)
                      and p.is_file())
    fs, path = filesystem(directory)
    with _reaching(directory):
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    names = sorted(info.base_name for info in infos if info.type == pafs.FileType.File)
    return [join(directory, n) for n in names if n.startswith(prefix) and n.endswith(suffix)]


def delete(loc: str | os.PathLike) -> None:
    """Remove the file ``loc`` (nothing when it is gone already)."""
    if not is_remote(loc):
        Path(loc).unlink(missing_ok=True)
        return
    fs, path = filesystem(loc)
    try:
        with _reaching(loc):
            fs.delete_file(path)
    except FileNotFoundError:
        pass


def remove_tree(loc: str | os.PathLike) -> None:
    """Remove the directory ``loc`` and everything under it (nothing when it is gone)."""
    if not is_remote(loc):
        if Path(loc).is_dir():
            shutil.rmtree(loc)
        return
    fs, path = filesystem(loc)
    with _reaching(loc):
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_dir(path)


def upload_dir(local: str | os.PathLike, loc: str | os.PathLike) -> None:
    """Copy the local directory ``local`` to ``loc`` (files replaced one by one; local targets are copied
    into place whole)."""
    if not is_remote(loc):
        if Path(local).resolve() != Path(loc).resolve():
            shutil.copytree(local, loc, dirs_exist_ok=True)
        return
    fs, path = filesystem(loc)
    with _reaching(loc):
        pafs.copy_files(str(Path(local).resolve()), path, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)


def download(loc: str, local: str | os.PathLike, names: tuple[str, ...]) -> Path:
    """Copy the entries ``names`` (files or directories) of the remote ``loc`` into the local directory
    ``local``, replacing what was there under those names; returns ``local``. Missing names are skipped."""
    fs, path = filesystem(loc)
    local = Path(local)
    local.mkdir(parents=True, exist_ok=True)
    for name in names:
        source = f"{path}/{name}"
        with _reaching(loc):
            kind = fs.get_file_info(source).type
        target = local / name
        if kind == pafs.FileType.NotFound:
            continue
        if target.is_dir():
            shutil.rmtree(target)
        if kind == pafs.FileType.File:
            atomic_write_bytes(target, read_bytes(join(loc, name)))
        else:
            target.mkdir(parents=True)
            with _reaching(loc):
                pafs.copy_files(source, str(target), source_filesystem=fs,
                                destination_filesystem=pafs.LocalFileSystem())
    return local


def cache_dir(loc: str, what: str) -> Path:
    """A local directory for ``what`` of the remote ``loc`` on this machine: under ``$P2M_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/p2m-search``, else ``~/.cache/p2m-search``; named by the URI, readable and unique."""
    root = os.environ.get("P2M_CACHE_DIR") or \
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "p2m-search"
    digest = hashlib.sha1(str(loc).encode()).hexdigest()[:10]
    return Path(root).expanduser() / what / f"{name_of(loc)}-{digest}"


def subdirs(directory: str | os.PathLike) -> list[str]:
    """The names of the directories directly in ``directory``, sorted; [] when it does not exist."""
    if not is_remote(directory):
        root = Path(directory)
        return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    fs, path = filesystem(directory)
    with _reaching(directory):
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(info.base_name for info in infos if info.type == pafs.FileType.Directory)
