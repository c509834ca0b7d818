"""results.lease: one driver per experiment. A lease is taken whole and given back on every exit; a second driver is
refused in one line; of drivers racing in separate processes exactly one wins, for a free experiment and for a stale
lease alike, and so it does in each of 300 drawn schedules of three takers switched at every file operation; a lease
whose holder died on this host, or went silent elsewhere, is taken over and the takeover logged; the heartbeat
advances; a holder that was taken over neither rewrites nor removes the new holder's file. The object-storage path
runs against pyarrow's local file system standing in for the bucket (deterministic: the settle wait is replaced), and
once against moto's S3 server (conftest's ``s3``; skipped without boto3)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from results import lease as lease_module
from results import storage
from results.lease import LEASE_FILE, LEASE_LOG, Lease, LeaseHeld, holder

REPO = Path(__file__).resolve().parents[2]
HOST = socket.gethostname()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plant(exp: Path, *, host: str = HOST, pid: int | None = None, command: str = "launch",
           heartbeat_age_s: float = 0.0, token: str = "f" * 32) -> dict:
    """Write another driver's lease record into ``exp``."""
    now = time.time()
    record = {"host": host, "pid": pid or os.getpid(), "command": command, "token": token,
              "started": _iso(now - 600), "heartbeat": _iso(now - heartbeat_age_s)}
    exp.mkdir(parents=True, exist_ok=True)
    (exp / LEASE_FILE).write_text(json.dumps(record))
    return record


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _read(exp: Path) -> dict:
    return json.loads((exp / LEASE_FILE).read_text())


def _log_lines(exp: Path) -> list[dict]:
    return [json.loads(line) for line in (exp / LEASE_LOG).read_text().splitlines()]


def _wait_for(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.mark.parametrize("ending", ["normal", "error", "KeyboardInterrupt"])
def test_lease_is_written_while_held_and_removed_on_every_exit(tmp_path, ending):
    exp = tmp_path / "exp"
    raised = {"normal": None, "error": RuntimeError, "KeyboardInterrupt": KeyboardInterrupt}[ending]
    try:
        with Lease(exp, "launch") as held:
            record = _read(exp)
            assert record == held.record
            assert (record["host"], record["pid"], record["command"]) == (HOST, os.getpid(), "launch")
            assert len(record["token"]) == 32 and record["started"].endswith("Z")
            assert holder(exp) == record
            if raised:
                raise raised()
    except (RuntimeError, KeyboardInterrupt) as exc:
        assert type(exc) is raised
    assert not (exp / LEASE_FILE).exists()
    assert holder(exp) is None
    assert [p.name for p in exp.iterdir()] == []  # no temporary or set-aside file left
    assert held.record is None and not held.lost


def test_a_second_driver_is_refused_in_one_line_naming_the_holder(tmp_path):
    exp = tmp_path / "exp"
    with Lease(exp, "launch") as first:
        with pytest.raises(LeaseHeld) as refused:
            Lease(exp, "resume").acquire()
        message = str(refused.value)
        assert isinstance(refused.value, ValueError)
        assert "\n" not in message
        assert message.startswith(f"{exp}: another driver holds this experiment (launch, pid {os.getpid()} on {HOST}")
        assert f"remove {exp / LEASE_FILE} if you know it is dead" in message
        assert _read(exp) == first.record  # the refused driver changed nothing
    assert not (exp / LEASE_FILE).exists()
    with Lease(exp, "resume"):  # free again once given back
        assert _read(exp)["command"] == "resume"


RACER = r"""
import sys, time
from results.lease import Lease, LeaseHeld
kept = []
print("ready", flush=True)
for line in sys.stdin:
    exp, at = line.split()
    while time.time() < float(at) - 0.003:
        time.sleep(0.0005)
    while time.time() < float(at):  # spin the last few ms so the racers start together
        pass
    try:
        kept.append(Lease(exp, "race", timeout_s=60, heartbeat_s=30).acquire())  # held until the process ends
        print("won", flush=True)
    except LeaseHeld:
        print("held", flush=True)
"""


def test_processes_racing_for_one_experiment_exactly_one_wins(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    racers = [subprocess.Popen([sys.executable, "-c", RACER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, cwd=REPO, env=env) for _ in range(3)]
    try:
        assert [r.stdout.readline().strip() for r in racers] == ["ready"] * 3
        dead = _dead_pid()
        for round_ in range(20):
            exp = tmp_path / f"exp{round_}"
            stale = round_ % 2 == 1  # odd rounds: all race to take over a dead driver's lease
            if stale:
                _plant(exp, pid=dead)
            at = time.time() + 0.15
            for racer in racers:
                racer.stdin.write(f"{exp} {at}\n")
                racer.stdin.flush()
            outcomes = [r.stdout.readline().strip() for r in racers]
            assert sorted(outcomes) == ["held", "held", "won"], f"round {round_}: {outcomes}"
            winner = racers[outcomes.index("won")].pid
            assert _read(exp)["pid"] == winner
            if stale:  # one takeover entry: to the winner, from the dead driver
                (entry,) = _log_lines(exp)
                assert (entry["by"]["pid"], entry["from"]["pid"]) == (winner, dead)
            assert sorted(p.name for p in exp.iterdir()) == [LEASE_FILE, LEASE_LOG][:1 + stale]
    finally:
        for racer in racers:
            racer.stdin.close()
            racer.wait(timeout=30)


@pytest.mark.parametrize("death", ["reaped", "zombie"])
def test_a_dead_holder_on_this_host_is_taken_over_at_once_and_logged(tmp_path, caplog, death):
    exp = tmp_path / "exp"
    if death == "reaped":
        pid = _dead_pid()
    else:  # SIGKILLed and not yet waited for by its parent
        child = subprocess.Popen(["sleep", "60"])
        child.send_signal(signal.SIGKILL)
        assert _wait_for(lambda: Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z")
        pid = child.pid
    old = _plant(exp, pid=pid, command="launch", heartbeat_age_s=0)  # a fresh heartbeat: only the pid tells
    try:
        with caplog.at_level(logging.WARNING, logger="results.lease"), Lease(exp, "resume") as taker:
            assert _read(exp)["token"] == taker.record["token"]
            taker_record = taker.record
    finally:
        if death == "zombie":
            child.wait()
    lines = [r.getMessage() for r in caplog.records if r.name == "results.lease"]
    assert lines == [f"{exp}: took over the driver lease from launch, pid {pid} on {HOST}: "
                     f"holder pid {pid} on host {HOST} is gone"]
    (entry,) = _log_lines(exp)
    assert entry["event"] == "takeover" and entry["reason"] == f"holder pid {pid} on host {HOST} is gone"
    assert entry["from"]["token"] == old["token"] and entry["from"]["pid"] == pid
    assert entry["by"]["pid"] == os.getpid() and entry["by"]["command"] == "resume"
    assert entry["by"] == {k: taker_record[k] for k in ("host", "pid", "command", "token")}
    assert entry["time"].endswith("Z")
    assert not (exp / LEASE_FILE).exists()


def test_another_hosts_lease_is_taken_over_only_when_its_heartbeat_is_old(tmp_path):
    exp = tmp_path / "exp"
    _plant(exp, host="host-a", pid=1234, command="launch", heartbeat_age_s=5)
    with pytest.raises(LeaseHeld, match=r"\(launch, pid 1234 on host-a, since .*Z, last heartbeat [5-9] s ago\)"):
        Lease(exp, "resume", timeout_s=120).acquire()
    assert _read(exp)["host"] == "host-a"

    _plant(exp, host="host-a", pid=1234, heartbeat_age_s=200)
    with Lease(exp, "resume", timeout_s=120):
        assert _read(exp)["host"] == HOST
    (entry,) = _log_lines(exp)
    assert entry["from"]["host"] == "host-a" and entry["reason"].startswith("no heartbeat for 20")

    # the same fresh lease, seen from a clock 200 s later: stale without waiting
    _plant(exp, host="host-a", pid=1234, heartbeat_age_s=0)
    with Lease(exp, "resume", timeout_s=120, clock=lambda: time.time() + 200):
        assert _read(exp)["host"] == HOST
    assert len(_log_lines(exp)) == 2


def test_the_heartbeat_advances_while_held(tmp_path):
    exp = tmp_path / "exp"
    with Lease(exp, "launch", timeout_s=5, heartbeat_s=0.05) as held:
        first = _read(exp)
        assert _wait_for(lambda: _read(exp)["heartbeat"] != first["heartbeat"])
        later = _read(exp)
        assert (later["token"], later["started"]) == (first["token"], first["started"])
        assert later["heartbeat"] > first["heartbeat"]
        assert not held.lost


def test_a_driver_taken_over_does_not_remove_the_new_holders_lease(tmp_path, caplog):
    exp = tmp_path / "exp"
    old = Lease(exp, "launch", timeout_s=60, heartbeat_s=30).acquire()
    new = Lease(exp, "resume", timeout_s=60, clock=lambda: time.time() + 120).acquire()  # sees old as silent
    assert _read(exp)["token"] == new.record["token"]
    with caplog.at_level(logging.WARNING, logger="results.lease"):
        old.release()
    assert old.lost
    assert _read(exp)["token"] == new.record["token"]
    assert any("this driver lost its lease (taken over by resume" in r.getMessage() for r in caplog.records)
    new.release()
    assert not (exp / LEASE_FILE).exists()


def test_the_heartbeat_of_a_driver_taken_over_stops_and_leaves_the_new_lease(tmp_path):
    exp = tmp_path / "exp"
    with Lease(exp, "launch", timeout_s=60, heartbeat_s=0.05) as old:
        with Lease(exp, "resume", timeout_s=60, heartbeat_s=30, clock=lambda: time.time() + 120) as new:
            taken = _read(exp)
            assert _wait_for(lambda: old.lost)
            time.sleep(0.2)  # several of old's heartbeat periods
            assert _read(exp) == taken == new.record
        assert not (exp / LEASE_FILE).exists()
    assert not (exp / LEASE_FILE).exists()


def _claim_of(exp: Path) -> Path:
    stale = (exp / LEASE_FILE).read_bytes()
    return exp / f".{LEASE_FILE}.{hashlib.sha256(stale).hexdigest()[:32]}.claim"


def test_a_taker_that_finds_the_stale_lease_replaced_after_it_judged_it_is_refused_naming_the_new_holder(
        tmp_path, monkeypatch):
    exp = tmp_path / "exp"
    _plant(exp, pid=_dead_pid())
    create = lease_module._create_local

    def rival_replaces_it_first(path, data):  # another taker finished between this one's judging and its claim
        if path.name.endswith(".claim"):
            rival.update(_plant(exp, pid=os.getppid(), command="race", token="a" * 32))
        return create(path, data)

    rival = {}
    monkeypatch.setattr(lease_module, "_create_local", rival_replaces_it_first)
    with pytest.raises(LeaseHeld, match=r"\(race, pid \d+ on "):
        Lease(exp, "resume").acquire()
    assert _read(exp) == rival
    assert sorted(p.name for p in exp.iterdir()) == [LEASE_FILE]  # its claim removed, nothing replaced


def test_a_taker_that_finds_another_claiming_the_stale_lease_waits_for_it_and_is_refused_naming_it(tmp_path):
    exp = tmp_path / "exp"
    _plant(exp, pid=_dead_pid())
    claim = _claim_of(exp)
    claim.write_text("another taker's record")

    def other_taker_finishes():
        time.sleep(0.3)
        _plant(exp, pid=os.getppid(), command="race", token="c" * 32)
        claim.unlink()

    finisher = threading.Thread(target=other_taker_finishes)
    finisher.start()
    try:
        with pytest.raises(LeaseHeld, match=r"\(race, pid \d+ on "):
            Lease(exp, "resume").acquire()
    finally:
        finisher.join()
    assert _read(exp)["token"] == "c" * 32
    assert not (exp / LEASE_LOG).exists()  # the refused driver logged no takeover


def test_a_claim_left_by_a_taker_that_died_blocks_the_takeover_until_it_is_old(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(lease_module, "_CLAIM_WAIT_S", 0.2)
    exp = tmp_path / "exp"
    dead = _dead_pid()
    _plant(exp, pid=dead)
    claim = _claim_of(exp)
    claim.write_text("a dead taker's record")
    with pytest.raises(LeaseHeld) as refused:
        Lease(exp, "resume", timeout_s=60).acquire()
    assert str(refused.value).startswith(f"{exp}: another driver is taking over the stale driver lease ({claim} made ")
    assert "\n" not in str(refused.value) and claim.exists() and _read(exp)["pid"] == dead

    os.utime(claim, (time.time() - 61, time.time() - 61))
    with caplog.at_level(logging.WARNING, logger="results.lease"), Lease(exp, "resume", timeout_s=60) as taker:
        assert _read(exp)["token"] == taker.record["token"]
        assert not claim.exists()
    messages = [r.getMessage() for r in caplog.records if r.name == "results.lease"]
    assert messages[0].startswith(f"{exp}: removed a claim on the stale driver lease left 6")
    assert messages[1] == (f"{exp}: took over the driver lease from launch, pid {dead} on {HOST}: "
                           f"holder pid {dead} on host {HOST} is gone")
    assert sorted(p.name for p in exp.iterdir()) == [LEASE_LOG]


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"pid": 5}'])
def test_an_unreadable_lease_is_refused_while_recent_and_taken_over_when_old(tmp_path, content):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / LEASE_FILE).write_bytes(content)
    with pytest.raises(LeaseHeld) as refused:
        Lease(exp, "resume", timeout_s=60).acquire()
    assert "\n" not in str(refused.value)
    assert str(refused.value).startswith(f"{exp / LEASE_FILE}: unreadable driver lease (")
    assert (exp / LEASE_FILE).read_bytes() == content

    old = time.time() - 100
    os.utime(exp / LEASE_FILE, (old, old))
    assert "error" in holder(exp)
    with Lease(exp, "resume", timeout_s=60) as taker:
        assert _read(exp) == taker.record
    (entry,) = _log_lines(exp)
    assert entry["from"] is None and entry["reason"].startswith("unreadable lease (")


@pytest.mark.parametrize("kwargs, match", [
    ({"timeout_s": 0}, "timeout_s must be a finite number of seconds > 0, got 0"),
    ({"timeout_s": float("nan")}, "timeout_s must be a finite number of seconds > 0, got nan"),
    ({"heartbeat_s": -1}, "heartbeat_s must be a finite number of seconds > 0, got -1"),
    ({"timeout_s": 10, "heartbeat_s": 10}, r"heartbeat_s must be below timeout_s \(10\), got 10"),
    ({"settle_s": float("inf")}, "settle_s must be a finite number of seconds >= 0, got inf"),
    ({"command": " "}, "command must be a non-empty string, got ' '"),
])
def test_bad_arguments_are_refused(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Lease(tmp_path, **{"command": "launch", **kwargs})


# object storage ----------------------------------------------------------------------------------------------


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """``s3://bucket/exp`` served by pyarrow's local file system rooted at ``tmp_path / "root"`` (it stands in
    for S3: the code under test goes through storage's remote path); returns the URI and its local directory.
    The settle waits are recorded instead of slept."""
    root = tmp_path / "root"
    (root / "bucket" / "exp").mkdir(parents=True)  # a local file system needs the directory a bucket does not
    monkeypatch.setattr(storage, "_remote_fs", lambda scheme: pafs.SubTreeFileSystem(str(root), pafs.LocalFileSystem()))
    waits = []
    monkeypatch.setattr(lease_module, "_sleep", waits.append)
    return "s3://bucket/exp", root / "bucket" / "exp", waits


def test_on_object_storage_a_lease_is_taken_refused_and_given_back(bucket):
    uri, local, waits = bucket
    with Lease(uri, "launch", settle_s=0.5) as held:
        assert waits == [0.5]  # written, then read back after the settle delay
        assert held.path == f"{uri}/{LEASE_FILE}"
        assert _read(local) == held.record == holder(uri)
        with pytest.raises(LeaseHeld, match=rf"^{uri}: another driver holds this experiment \(launch, pid "):
            Lease(uri, "resume").acquire()
    assert not (local / LEASE_FILE).exists()


def test_on_object_storage_a_silent_lease_is_taken_over_and_logged(bucket):
    uri, local, _ = bucket
    _plant(local, host="host-a", pid=1234, heartbeat_age_s=500)
    with Lease(uri, "resume", timeout_s=60, heartbeat_s=0.05) as held:
        assert _read(local)["token"] == held.record["token"]
        first = _read(local)["heartbeat"]
        assert _wait_for(lambda: _read(local)["heartbeat"] != first)
    (entry,) = _log_lines(local)
    assert entry["from"]["host"] == "host-a" and entry["reason"].startswith("no heartbeat for 50")
    assert not (local / LEASE_FILE).exists()


def test_on_object_storage_a_driver_whose_record_was_overwritten_while_settling_loses(bucket, monkeypatch):
    uri, local, _ = bucket
    rival = {}
    # another driver writes its record during this one's settle delay: last writer wins
    monkeypatch.setattr(lease_module, "_sleep", lambda s: rival.update(_plant(local, host="host-b", pid=77)))
    with pytest.raises(LeaseHeld, match=r"\(launch, pid 77 on host-b, since "):
        Lease(uri, "resume").acquire()
    assert _read(local) == rival  # the loser did not remove the winner's record


def test_on_object_storage_a_driver_interrupted_while_settling_leaves_no_lease(bucket, monkeypatch):
    uri, local, _ = bucket

    def interrupted(seconds):
        assert (local / LEASE_FILE).exists()  # written, not yet read back
        raise KeyboardInterrupt

    monkeypatch.setattr(lease_module, "_sleep", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Lease(uri, "launch").acquire()
    assert not (local / LEASE_FILE).exists()


def test_on_a_real_s3_protocol_server_the_lease_is_taken_kept_fresh_taken_over_and_given_back(s3, s3_bucket):
    """The same path against moto's S3 server (conftest's ``s3``): object mtimes, deletes and the log's
    read-add-write as S3 does them."""
    uri = f"s3://{s3_bucket}/lease-{os.getpid()}-{time.time_ns()}"
    with Lease(uri, "launch", timeout_s=5, heartbeat_s=0.1, settle_s=0.2) as held:
        assert holder(uri) == held.record
        with pytest.raises(LeaseHeld, match=rf"^{uri}: another driver holds this experiment \(launch, "):
            Lease(uri, "resume", settle_s=0.2).acquire()
        first = holder(uri)["heartbeat"]
        assert _wait_for(lambda: holder(uri)["heartbeat"] != first)
    assert holder(uri) is None
    silent = {"host": "host-a", "pid": 1234, "command": "launch", "token": "c" * 32,
              "started": _iso(time.time() - 900), "heartbeat": _iso(time.time() - 600)}
    storage.write_bytes(f"{uri}/{LEASE_FILE}", json.dumps(silent).encode())
    with Lease(uri, "resume", settle_s=0.2) as taker:
        assert holder(uri) == taker.record
        token = taker.record["token"]
    (entry,) = [json.loads(line) for line in storage.read_bytes(f"{uri}/{LEASE_LOG}").decode().splitlines()]
    assert entry["from"] == silent and entry["by"]["token"] == token
    assert holder(uri) is None



class _Turns:
    """Runs driver threads one at a time, switching at each file operation to a driver drawn by ``rng``: a
    schedule of their operations, one of all the interleavings the drivers could run in."""

    def __init__(self, drivers: int, rng: random.Random):
        self.rng, self.cond = rng, threading.Condition()
        self.alive, self.ready, self.turn = set(range(drivers)), set(), None
        self.index = threading.local()

    def point(self) -> None:
        """Called before a file operation: give up the turn, and wait until this driver is drawn again."""
        i = getattr(self.index, "driver", None)
        if i is None:
            return  # not a driver's thread (a heartbeat)
        with self.cond:
            self.ready.add(i)
            self.turn = None
            self._draw()
            self.cond.wait_for(lambda: self.turn == i)
            self.ready.discard(i)

    def run(self, i: int, work) -> None:
        self.index.driver = i
        try:
            self.point()
            work()
        finally:
            with self.cond:
                self.alive.discard(i)
                self.turn = None
                self._draw()

    def _draw(self) -> None:
        if self.turn is None and self.ready and self.ready == self.alive:  # every live driver waits for its turn
            self.turn = self.rng.choice(sorted(self.ready))
            self.cond.notify_all()


def test_of_three_drivers_taking_over_one_stale_lease_exactly_one_wins_in_every_drawn_schedule(tmp_path, monkeypatch):
    """Three takers of one stale lease, run one at a time and switched at each file operation (every read, exclusive
    create, rename) to a driver drawn at random: in each of 300 schedules exactly one holds the lease, and the file
    holds its record."""
    monkeypatch.setattr(lease_module, "_CLAIM_WAIT_S", 2.0)
    dead, rng = _dead_pid(), random.Random(20261206)
    for schedule in range(300):
        exp = tmp_path / f"exp{schedule}"
        _plant(exp, pid=dead)
        turns, leases = _Turns(3, rng), [None] * 3

        def hooked(fn):
            def call(*args, **kwargs):
                turns.point()
                return fn(*args, **kwargs)
            return call

        def drive(i: int) -> None:
            with contextlib.suppress(LeaseHeld):
                leases[i] = Lease(exp, f"driver{i}", timeout_s=60, heartbeat_s=30).acquire()

        with monkeypatch.context() as patch:
            for owner, name in ((lease_module, "_read_local"), (lease_module, "_create_local"), (os, "rename"),
                                (os, "replace"), (Path, "read_bytes")):
                patch.setattr(owner, name, hooked(getattr(owner, name)))
            threads = [threading.Thread(target=turns.run, args=(i, lambda i=i: drive(i))) for i in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        winners = [held for held in leases if held is not None]
        try:
            assert not any(thread.is_alive() for thread in threads), f"schedule {schedule}: a driver hangs"
            assert len(winners) == 1, f"schedule {schedule}: {len(winners)} drivers hold the lease"
            assert _read(exp)["token"] == winners[0].record["token"]
        finally:
            for held in winners:
                held.release()
