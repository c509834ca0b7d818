"""A private PostgreSQL server for the tests: the distribution's ``postgresql`` (installed by ``install.sh`` when it is
missing and the tests run as root), a new cluster in a temporary directory, listening on 127.0.0.1 on a free port
and on a unix socket in that directory only, trust authentication for those two only.

:func:`server` is the context manager; :func:`postgres_url` the pytest fixture a test module imports. The server
runs as the ``postgres`` user when the tests run as root (PostgreSQL refuses to run as root), else as the current
user. Whatever happens, it is stopped by its pid and its directory removed.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALL = Path(__file__).with_name("install.sh")
PACKAGE = "postgresql"  # Debian's: the current major version's server, client and initdb
SERVICE_USER = "postgres"  # who runs the server when the tests run as root (the package creates this user)
DATABASE = "p2m"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """The SQLAlchemy URL of database ``p2m`` on a private server (psycopg2 driver); skipped, saying why, where no
    server can be had or the driver is missing."""
    pytest.importorskip("psycopg2", reason="PostgreSQL's driver is not installed (pip install psycopg2-binary)")
    with server() as url:
        yield url


@contextlib.contextmanager
def server(database: str = DATABASE) -> Iterator[str]:
    """Start a PostgreSQL server of its own with one database ``database``; yield its SQLAlchemy URL
    (``postgresql+psycopg2://postgres@127.0.0.1:PORT/DATABASE``), then stop it and remove its files."""
    bin_dir = _bin_dir()
    as_root = os.geteuid() == 0
    # /tmp itself, not pytest's tmp_path: the postgres user must reach it (pytest's root is 0700), and the socket's
    # path must fit in 107 bytes
    top = Path(tempfile.mkdtemp(prefix="p2mpg", dir="/tmp"))
    proc = None
    try:
        if as_root:
            owner = pwd.getpwnam(SERVICE_USER)
            os.chown(top, owner.pw_uid, owner.pw_gid)
        data, log = top / "data", top / "server.log"
        _run_as([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync",
                 "--encoding=UTF8", "--locale=C"], as_root)
        # trust for the socket and 127.0.0.1 only (the server listens nowhere else)
        (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        port = _free_port()
        with open(log, "wb") as out:  # a session of its own: a Ctrl-C of the tests' reaches it only through _stop
            proc = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(top),
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=50"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **_user_args(as_root))
        _wait_ready(bin_dir, proc, port, log)
        _run_as([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database],
                as_root=False)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{database}"
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(top, ignore_errors=True)


def _bin_dir() -> Path:
    """The newest installed server's bin directory (Debian: /usr/lib/postgresql/<major>/bin), installing the
    package first when it is missing and this is root; skips when it is missing and this is not root."""
    found = _installed()
    if found is None:
        if os.geteuid() != 0:
            pytest.skip(f"PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb) and the tests do not run "
                        f"as root to install it: run {INSTALL} {PACKAGE} as root")
        done = subprocess.run([str(INSTALL), PACKAGE], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"{INSTALL} {PACKAGE} failed: {done.stderr.strip() or done.stdout.strip()}", pytrace=False)
        found = _installed()
        if found is None:
            pytest.fail(f"{INSTALL} {PACKAGE} left no /usr/lib/postgresql/*/bin/initdb", pytrace=False)
    return found


def _installed() -> Path | None:
    versions = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if p.parent.parent.name.isdigit()]
    return max(versions, key=lambda p: int(p.parent.name)) if versions else None


def _user_args(as_root: bool) -> dict:
    """Popen's arguments that run a command as the postgres user (from root), with that user's home."""
    if not as_root:
        return {}
    owner = pwd.getpwnam(SERVICE_USER)
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": [], "cwd": "/",
            "env": {**os.environ, "HOME": owner.pw_dir, "USER": SERVICE_USER, "LOGNAME": SERVICE_USER}}


def _run_as(cmd: list[str], as_root: bool) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **_user_args(as_root))
    if done.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} failed ({done.returncode}): {(done.stderr or done.stdout).strip()}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(bin_dir: Path, proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited ({proc.returncode}) before it accepted connections: "
                               f"{log.read_text(errors='replace')[-2000:]}")
        ready = subprocess.run([str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)])
        if ready.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"postgres did not accept connections in {START_TIMEOUT_S} s: "
                               f"{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen) -> None:
    """PostgreSQL's fast shutdown (SIGINT to the postmaster, by its pid: it ends its own children), then SIGKILL to
    the postmaster if it has not ended in STOP_TIMEOUT_S (its children, each in a session of its own, notice that
    their postmaster is gone and exit)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
