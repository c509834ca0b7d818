"""One driver per experiment: a lease file, ``<experiment>/driver.lease``, that a driver (``launch``, ``resume``,
the race, ``train-best``) takes before it writes to the experiment and gives back when it ends.

Use::

    from results.lease import Lease, LeaseHeld

    with Lease(experiment, "launch"):  # LeaseHeld (a ValueError, one line) while another driver holds it
        ...                            # this driver's experiment now; a daemon thread keeps the lease fresh

API:
    ``Lease(experiment, command, timeout_s=120.0, heartbeat_s=15.0, *, clock=time.time, settle_s=2.0)``: a
    context manager; ``acquire()`` (returns the lease) and ``release()`` (idempotent) do the same by hand.
    ``lease.lost`` turns True when another driver took the lease over while this one held it (its heartbeat
    then stops, and it never removes the other driver's file); what to do then is the caller's decision.
    ``lease.record`` is the record written while held, else None.
    ``LeaseHeld(ValueError)``: refused, in one line naming the experiment and the holder (or the unreadable file).
    ``holder(experiment) -> dict | None``: the lease record as it stands, for status lines.
    ``LEASE_FILE``, ``LEASE_LOG``: the file names, ``driver.lease`` and ``driver.lease.log``.
    Take the lease before the first write to the experiment, and check ``lease.lost`` where stopping is safe.

The record is JSON: ``host`` (``socket.gethostname()``), ``pid``, ``command``, ``token`` (random, one per
acquisition), ``started`` and ``heartbeat`` (UTC, ISO 8601 with ``Z``). The heartbeat is rewritten every
``heartbeat_s`` seconds, and only while the file still holds this driver's token.

A lease is stale, and taken over, when its heartbeat is older than ``timeout_s``, or at once when its holder ran
on this host (the same hostname) and its pid is gone (or a zombie), so a driver killed with SIGKILL does not
block an immediate ``resume``. A file that is not a lease record (not JSON, a field missing) is stale when
untouched for ``timeout_s``, else refused. Each takeover is logged on this logger (one line) and appended as a
JSON line to ``<experiment>/driver.lease.log``: ``time``, ``event``, ``reason``, ``from`` (the stale record, null
when unreadable) and ``by`` (the new holder).

How safe it is:
    A local or shared disk (NFS included): the lease is created whole with ``os.link`` of a temporary file (an
    exclusive ``O_CREAT | O_EXCL`` create where hard links are refused), so of two drivers racing for a free
    experiment exactly one wins. A taker first claims the stale record: it creates
    ``.driver.lease.<digest of the stale bytes>.claim`` with the same exclusive create, so of any number of
    takers exactly one holds the claim. The claimant checks that the file still holds what it judged stale and
    replaces it with its own in one ``rename``, then removes its claim; the lease file is never absent during a
    takeover, so a driver arriving then finds it and is refused, and a taker that judged a record already
    replaced finds the file changed and judges again. The others wait for the new lease and are refused
    naming it. A taker that died holding a claim blocks takeovers of that record until the claim is
    ``timeout_s`` old; then the next taker removes it. Left open, each needing a driver asleep for more than
    ``timeout_s``: a holder that wakes then rewrites its heartbeat or releases as a taker replaces it; a
    claimant that wakes then replaces a lease after its claim was judged abandoned. Every holder checks the
    file's token at each beat, so a displaced one sees ``lost`` within ``heartbeat_s``.
    Object storage (``s3://``, ``gs://``): pyarrow has no conditional write, so this is best effort. A driver
    writes its record, waits ``settle_s``, reads it back and wins only if its token is still there; two
    drivers both win only if one's read-then-write takes longer than ``settle_s``, and the next heartbeat of
    one of them then finds the other's token and sets ``lost``.
    Clocks: staleness compares the holder's heartbeat with this host's clock, so hosts sharing an experiment
    must agree to well within ``timeout_s - heartbeat_s``; hostnames must be unique among them. A dead
    holder's pid reused by another process on the same host makes it look alive until ``timeout_s``.

Only the standard library, pyarrow's file system (for an object's mtime) and :mod:`results.storage` are used.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.fs as pafs

from results import storage
from results.storage import Location

LEASE_FILE = "driver.lease"
LEASE_LOG = "driver.lease.log"
FIELDS = ("host", "pid", "command", "token", "started", "heartbeat")

_ATTEMPTS = 5  # passes of acquire when the file keeps changing under it (each pass wins, refuses or retries)
_CLAIM_WAIT_S = 10.0  # how long a taker waits for another that claimed the same stale lease
_JOIN_S = 30.0  # how long release waits for a heartbeat in flight
_sleep = time.sleep  # the settle wait on object storage (tests replace it)

log = logging.getLogger(__name__)


class LeaseHeld(ValueError):
    """Another driver holds the experiment, or its lease file is unreadable and recent; the message is one line
    naming the experiment and the holder (or the file)."""


class Lease:
    """The lease of one driver on ``experiment`` (a local path or an ``s3://``/``gs://`` URI).

    Args:
        experiment: the experiment's location; a local one is created if missing.
        command: what the driver is (``launch``, ``resume``, ``race``, ``train-best``), shown to others.
        timeout_s: a heartbeat older than this makes the lease stale.
        heartbeat_s: seconds between heartbeats; below ``timeout_s``.
        clock: seconds since the epoch, for the records and the staleness test (tests shift it).
        settle_s: on object storage, the wait between writing the record and reading it back.
    """

    def __init__(self, experiment: Location, command: str, timeout_s: float = 120.0, heartbeat_s: float = 15.0,
                 *, clock: Callable[[], float] = time.time, settle_s: float = 2.0):
        for name, value in (("timeout_s", timeout_s), ("heartbeat_s", heartbeat_s)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
        if heartbeat_s >= timeout_s:
            raise ValueError(f"heartbeat_s must be below timeout_s ({timeout_s}), got {heartbeat_s}")
        if not isinstance(settle_s, (int, float)) or not math.isfinite(settle_s) or settle_s < 0:
            raise ValueError(f"settle_s must be a finite number of seconds >= 0, got {settle_s!r}")
        if not isinstance(command, str) or not command.strip():
            raise ValueError(f"command must be a non-empty string, got {command!r}")
        self.experiment = experiment if storage.is_remote(experiment) else Path(experiment)
        self.path = storage.join(self.experiment, LEASE_FILE)
        self.command = _one_line(command)
        self.timeout_s, self.heartbeat_s, self.settle_s = float(timeout_s), float(heartbeat_s), float(settle_s)
        self.lost = False
        self.record: dict | None = None
        self._clock = clock
        self._remote = storage.is_remote(self.experiment)
        self._lock = threading.Lock()  # a heartbeat and a release never interleave
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._misses = 0

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.release()
            return
        try:  # an error giving the lease back must not hide the one that ended the driver
            self.release()
        except Exception as error:
            log.warning(f"{self.experiment}: could not give back the driver lease: {_first_line(error)}")

    def acquire(self) -> Lease:
        """Take the lease, taking over a stale one; raises LeaseHeld while another driver holds it."""
        if self.record is not None:
            raise ValueError(f"{self.path}: this lease is held already")
        now = self._clock()
        record = {"host": socket.gethostname(), "pid": os.getpid(), "command": self.command,
                  "token": secrets.token_hex(16), "started": _iso(now), "heartbeat": _iso(now)}
        taken = self._acquire_remote(record) if self._remote else self._acquire_local(record)
        self.record, self.lost, self._misses = record, False, 0
        try:
            if taken is not None:
                self._log_takeover(*taken, record)
            self._stop.clear()
            self._thread = threading.Thread(target=self._heartbeats, name="driver-lease-heartbeat", daemon=True)
            self._thread.start()
        except BaseException:  # interrupted before the caller got the lease: give it back
            self.release()
            raise
        return self

    def release(self) -> None:
        """Stop the heartbeat and remove the lease file if it still holds this driver's token."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(_JOIN_S)
        self._thread = None
        with self._lock:
            if self.record is None:
                return
            try:
                current = None if self.lost else self._read()
                if current is not None and _token_of(current) != self.record["token"]:
                    self._lose(_describe(current))  # taken over: the file is the new holder's
                elif current is not None:
                    self._remove(current)
            finally:
                self.record = None

    # acquiring -----------------------------------------------------------------------------------------------

    def _acquire_local(self, record: dict) -> tuple[dict | None, str] | None:
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(_ATTEMPTS):
            if _create_local(path, _encode(record)):
                return None
            seen = _read_local(path)
            if seen is None:
                continue  # released in between: try again
            old, reason = self._judge(*seen)  # raises LeaseHeld while it is live
            if self._take_over_local(path, seen[0], _encode(record)):
                return old, reason
            # another taker holds the claim, or the file changed: judge what it holds now
        raise LeaseHeld(f"{self.experiment}: the driver lease {self.path} kept changing while this driver tried "
                        f"to take it ({_ATTEMPTS} times); try again")

    def _take_over_local(self, path: Path, stale: bytes, data: bytes) -> bool:
        """Replace the lease file holding ``stale`` by ``data``; True when done, False when the file changed or
        another taker claimed ``stale`` (then it waits, up to ``_CLAIM_WAIT_S``, for that taker to finish)."""
        claim = path.with_name(f".{path.name}.{hashlib.sha256(stale).hexdigest()[:32]}.claim")
        if not _create_local(claim, data):
            self._await_claim(path, stale, claim)
            return False
        try:
            if (_read_local(path) or (None,))[0] != stale:
                return False  # replaced, released or rewritten since it was judged
            storage.write_bytes(path, data)  # a temporary file renamed over the stale one: never absent
            return True
        finally:
            claim.unlink(missing_ok=True)

    def _await_claim(self, path: Path, stale: bytes, claim: Path) -> None:
        """Wait while another taker's ``claim`` on the lease ``stale`` stands; remove it once ``timeout_s`` old
        (its taker died); raises LeaseHeld when it stands, recent, for ``_CLAIM_WAIT_S``."""
        deadline = time.monotonic() + _CLAIM_WAIT_S
        while True:
            seen, held = _read_local(claim), _read_local(path)
            if seen is None or held is None or held[0] != stale:
                return  # the taker finished, or gave up: judge the file again
            age = self._clock() - seen[1]
            if age > self.timeout_s:
                log.warning(f"{self.experiment}: removed a claim on the stale driver lease left {age:.0f} s ago "
                            f"by a taker that did not finish ({claim.name})")
                _set_aside(claim, seen[0], secrets.token_hex(8))
                return
            if time.monotonic() > deadline:
                raise LeaseHeld(f"{self.experiment}: another driver is taking over the stale driver lease "
                                f"({claim} made {max(age, 0):.0f} s ago); try again, or remove {claim} after "
                                f"{self.timeout_s:.0f} s if no driver runs")
            time.sleep(0.01)

    def _acquire_remote(self, record: dict) -> tuple[dict | None, str] | None:
        for _ in range(_ATTEMPTS):
            seen = self._read_remote()
            taken = None if seen is None else self._judge(*seen)  # raises LeaseHeld while it is live
            again = self._read_remote()  # right before writing, to narrow the race with another writer
            if (again and again[0]) != (seen and seen[0]):
                continue
            storage.write_bytes(self.path, _encode(record))
            try:
                _sleep(self.settle_s)
                back = self._read_remote()
            except BaseException:  # interrupted while settling: leave no lease behind, if it is this one's
                with contextlib.suppress(Exception):
                    back = self._read_remote()
                    if back is not None and _token_of(back[0]) == record["token"]:
                        self._remove(back[0])
                raise
            if back is None:
                continue  # removed while settling: try again
            if _token_of(back[0]) != record["token"]:
                self._judge(*back)  # the driver that wrote after this one holds it: refused
                continue
            return taken
        raise LeaseHeld(f"{self.experiment}: the driver lease {self.path} kept changing while this driver tried "
                        f"to take it ({_ATTEMPTS} times); try again")

    def _judge(self, data: bytes, mtime: float) -> tuple[dict | None, str]:
        """The record and why it is stale; raises LeaseHeld when it is not."""
        now = self._clock()
        try:
            held = _parse(data)
        except ValueError as why:
            age = now - mtime
            if age > self.timeout_s:
                return None, f"unreadable lease ({why}) untouched for {age:.0f} s"
            raise LeaseHeld(f"{self.path}: unreadable driver lease ({why}), written {max(age, 0):.0f} s ago; another "
                            f"driver may be writing it: wait {self.timeout_s:.0f} s, or remove it if no driver "
                            f"runs") from None
        if held["host"] == socket.gethostname() and not pid_alive(held["pid"]):
            return held, f"holder pid {held['pid']} on host {held['host']} is gone"
        age = now - _parse_iso(held["heartbeat"])
        if age > self.timeout_s:
            return held, f"no heartbeat for {age:.0f} s"
        since = _iso(_parse_iso(held["started"]))[:19] + "Z"
        raise LeaseHeld(f"{self.experiment}: another driver holds this experiment ({held['command']}, pid "
                        f"{held['pid']} on {held['host']}, since {since}, last heartbeat {max(age, 0):.0f} s ago); "
                        f"wait for it, stop it, or remove {self.path} if you know it is dead")

    def _log_takeover(self, old: dict | None, reason: str, new: dict) -> None:
        """Log that ``new`` (this driver's record) took over from ``old`` (None: unreadable), stale for ``reason``."""
        who = f"{old['command']}, pid {old['pid']} on {old['host']}" if old else "an unreadable lease"
        log.warning(f"{self.experiment}: took over the driver lease from {who}: {reason}")
        ids = ("host", "pid", "command", "token")
        line = json.dumps({"time": _iso(self._clock()), "event": "takeover", "reason": reason, "from": old,
                           "by": {k: new[k] for k in ids}}, sort_keys=True).encode() + b"\n"
        target = storage.join(self.experiment, LEASE_LOG)
        try:
            if self._remote:  # no append on object stores: read, add, write back
                before = storage.read_bytes(target) if storage.exists(target) else b""
                storage.write_bytes(target, before + line)
            else:
                with open(target, "ab") as out:  # O_APPEND: one write per line, whole
                    out.write(line)
        except OSError as error:
            log.warning(f"{target}: could not record the takeover: {_first_line(error)}")

    # holding -------------------------------------------------------------------------------------------------

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._beat()
            except Exception as error:  # a storage hiccup: try again at the next beat
                log.warning(f"{self.experiment}: driver lease heartbeat failed: {_first_line(error)}")
            if self.lost:
                return

    def _beat(self) -> None:
        with self._lock:
            if self.record is None or self.lost or self._stop.is_set():
                return
            current = self._read()
            if current is None:
                self._misses += 1  # once may be a taker checking what it moved aside; twice is gone
                if self._misses >= 2:
                    self._lose("its file was removed")
                return
            self._misses = 0
            if _token_of(current) != self.record["token"]:
                self._lose(_describe(current))
                return
            self.record = {**self.record, "heartbeat": _iso(self._clock())}
            storage.write_bytes(self.path, _encode(self.record))

    def _lose(self, why: str) -> None:
        self.lost = True
        log.warning(f"{self.experiment}: this driver lost its lease ({why}); it no longer holds the experiment")

    def _remove(self, current: bytes) -> None:
        """Remove the lease file, which held ``current`` (this driver's record) when read."""
        if self._remote:
            storage.delete(self.path)
        else:
            _set_aside(Path(self.path), current, secrets.token_hex(8))

    # reading -------------------------------------------------------------------------------------------------

    def _read(self) -> bytes | None:
        seen = self._read_remote() if self._remote else _read_local(Path(self.path))
        return None if seen is None else seen[0]

    def _read_remote(self) -> tuple[bytes, float] | None:
        fs, path = storage.filesystem(self.path)
        try:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                return None
            mtime = info.mtime.timestamp() if info.mtime is not None else self._clock()
            return storage.read_bytes(self.path), mtime
        except FileNotFoundError:
            return None


def holder(experiment: Location) -> dict | None:
    """The record of ``experiment``'s lease as its file holds it (live or stale), for status lines; None when
    there is no lease file, ``{"error": why}`` when the file is not a lease record."""
    path = storage.join(experiment, LEASE_FILE)
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError:
        return None
    try:
        return _parse(data)
    except ValueError as why:
        return {"error": f"{path}: {why}"}


def _create_local(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data``, whole, unless it exists; True when this call created it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    tmp.write_bytes(data)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links on this file system (some FUSE and SMB mounts): an exclusive create
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _set_aside(path: Path, expected: bytes, token: str) -> bool:
    """Remove the lease file ``path`` if it holds ``expected``; True when this call removed it.

    It is renamed to a name of its own first and checked there, so a file that another driver put in place since
    ``expected`` was read is put back rather than removed."""
    aside = path.with_name(f".{path.name}.{token}.{secrets.token_hex(4)}.aside")
    try:
        if path.read_bytes() != expected:
            return False
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    try:
        moved = aside.read_bytes()
        if moved == expected:
            return True
        _create_local(path, moved)  # another driver's: back in place, unless a third has taken the name since
        return False
    finally:
        aside.unlink(missing_ok=True)


def _read_local(path: Path) -> tuple[bytes, float] | None:
    try:
        with open(path, "rb") as f:
            return f.read(), os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return None


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process on this host (a zombie is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's process
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no procfs (macOS), or it ended just now
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _parse(data: bytes) -> dict:
    """The lease record in ``data``; ValueError saying what is wrong when it is not one."""
    try:
        held = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not JSON" if data.strip() else "empty") from None
    if not isinstance(held, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in FIELDS if k not in held]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    pid = held["pid"]
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 2 ** 31:
        raise ValueError(f"pid {pid!r} is not a process id")
    for key in ("host", "command", "token", "started", "heartbeat"):
        if not isinstance(held[key], str):
            raise ValueError(f"{key} is not a string")
    for key in ("started", "heartbeat"):
        _parse_iso(held[key])
    return {**held, "host": _one_line(held["host"]), "command": _one_line(held["command"])}


def _parse_or_none(data: bytes) -> dict | None:
    try:
        return _parse(data)
    except ValueError:
        return None


def _token_of(data: bytes) -> str | None:
    held = _parse_or_none(data)
    return held and held["token"]


def _describe(data: bytes) -> str:
    try:
        held = _parse(data)
    except ValueError as why:
        return f"its file now holds an unreadable lease: {why}"
    return f"taken over by {held['command']}, pid {held['pid']} on {held['host']}"


def _encode(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True).encode()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_iso(text: str) -> float:
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time") from None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:200]


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
