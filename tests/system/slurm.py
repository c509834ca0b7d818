"""A SLURM cluster on the namespace hosts of :mod:`netns`: Debian's ``slurm-wlm`` and ``munge`` (installed by
``tests/services/install.sh`` when they are missing and the tests run as root), ``slurmctld`` on the first host, one
``slurmd`` per host, one ``munged`` per host with a key they share.

Every host gets the cluster's ``/etc/hosts`` (a file in the shared directory, bound onto ``/etc/hosts`` in the host's
own mount namespace only), so that the host names resolve as on a real cluster (``hostname --ip-address``). The
daemons keep everything in the host's private ``/tmp``: munge's key, socket, seed, pid and log under ``/tmp/munge``
(``AuthInfo=socket=...``), SLURM's state, spool, pid and log files under ``/tmp/slurm``. The configuration,
``slurm.conf`` in the shared directory (a directory outside ``/tmp``, which every host sees: the cluster's shared file
system), names each host by its name and namespace address, and uses plugins that need neither cgroups nor systemd
nor an accounting database: ``proctrack/linuxproc``, ``task/none``, ``jobacct_gather/none``, ``select/cons_tres``
with ``CR_CPU``. ``SlurmUser`` is root. Commands run on a host with :meth:`Slurm.env` (``SLURM_CONF``).

The daemons are not stopped here: they live in the hosts' namespaces, whose processes :class:`netns.Network`'s
teardown kills, whatever happens.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

INSTALL = Path(__file__).resolve().parents[1] / "services" / "install.sh"
PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "scontrol")
MUNGE_DIR = "/tmp/munge"  # on each host: its key, socket, seed, pid file and log
MUNGE_SOCKET = f"{MUNGE_DIR}/munge.socket.2"
SLURM_DIR = "/tmp/slurm"  # on each host: state (the controller's), spool, pid files, logs
SHARED_PARENT = Path("/var/tmp")  # outside /tmp, so every host sees it: the cluster's shared file system
SHARED_PREFIX = "p2mslurm"  # p2mslurm<pid>-...: the pid of the test process that made it
PARTITION = "p2m"
CRED_EXPIRE_S = 10  # a requeued job waits this long before it starts again (SLURM's default: 120 s)
START_TIMEOUT_S = 60


def unavailable() -> str | None:
    """Why SLURM cannot be had here (a reason for ``pytest.skip``), or None; installs the packages when they are
    missing and this is root. A failing install is a reason too (its one line)."""
    if all(shutil.which(tool) for tool in DAEMONS):
        return None
    if os.geteuid() != 0:
        return (f"SLURM and munge are not installed and the tests do not run as root to install them: run "
                f"{INSTALL} {' '.join(PACKAGES)} as root")
    done = subprocess.run([str(INSTALL), *PACKAGES], capture_output=True, text=True)
    if done.returncode != 0:
        return f"{INSTALL} {' '.join(PACKAGES)} failed: {(done.stderr or done.stdout).strip()}"
    missing = [tool for tool in DAEMONS if shutil.which(tool) is None]
    return f"{INSTALL} {' '.join(PACKAGES)} left no {', '.join(missing)}" if missing else None


@contextlib.contextmanager
def shared_directory() -> Iterator[Path]:
    """A new directory outside ``/tmp`` (every namespace host sees it at the same path), removed afterwards; those
    left by a test process that died without its teardown are removed first."""
    for path in SHARED_PARENT.glob(f"{SHARED_PREFIX}*-*"):
        pid = path.name.removeprefix(SHARED_PREFIX).split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=f"{SHARED_PREFIX}{os.getpid()}-", dir=SHARED_PARENT))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Slurm:
    """A running cluster: its hosts (``net``), its configuration file and shared directory."""
    net: object  # netns.Network
    conf: Path
    shared: Path

    @property
    def env(self) -> dict:
        """What a command on a host needs to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def run(self, host: str, *args, timeout: float = 60, check: bool = True):
        """A SLURM command (``sbatch``, ``scontrol``...) on host ``host``."""
        return self.net[host].run(*args, timeout=timeout, env=self.env, check=check)

    def job(self, job_id: str, host: str = "a") -> dict:
        """``scontrol show job``'s fields (``JobState``, ``Restarts``, ``NodeList``...) of ``job_id``."""
        out = self.run(host, "scontrol", "--oneliner", "show", "job", job_id).stdout
        fields = {}
        for word in out.split():
            key, sep, value = word.partition("=")
            if sep and key not in fields:
                fields[key] = value
        return fields

    def logs(self) -> str:
        """The tail of every host's daemon logs (for a failure's message)."""
        parts = []
        for host in self.net.hosts.values():
            for log in sorted((host.root / SLURM_DIR.removeprefix("/tmp/")).glob("*.log")) + \
                    [host.root / MUNGE_DIR.removeprefix("/tmp/") / "munged.log"]:
                if log.is_file():
                    parts.append(f"--- {host.name}: {log.name}\n{log.read_text(errors='replace')[-1500:]}")
        return "\n".join(parts)


@contextlib.contextmanager
def cluster(net, shared: Path, cpus: int = 1) -> Iterator[Slurm]:
    """Start munge and SLURM on ``net``'s hosts (controller on the first, ``cpus`` CPUs per node), with their
    configuration in ``shared``; yield once every node is idle."""
    hosts = list(net.hosts.values())
    etc_hosts = shared / "hosts"
    etc_hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{h.ip} {h.name}\n" for h in hosts))
    key = secrets.token_bytes(1024)  # munge's key: the same on every host
    for host in hosts:
        host.run("mount", "--bind", str(etc_hosts), "/etc/hosts", check=True)
        munge = host.root / MUNGE_DIR.removeprefix("/tmp/")
        munge.mkdir(mode=0o755)  # clients reach the socket: o+x (munged checks)
        (munge / "munge.key").write_bytes(key)
        (munge / "munge.key").chmod(0o400)
        host.run("munged", f"--socket={MUNGE_SOCKET}", f"--key-file={MUNGE_DIR}/munge.key",
                 f"--pid-file={MUNGE_DIR}/munged.pid", f"--seed-file={MUNGE_DIR}/munged.seed",
                 f"--log-file={MUNGE_DIR}/munged.log", check=True)  # forks into the background
        (host.root / SLURM_DIR.removeprefix("/tmp/") / "state").mkdir(parents=True)
        (host.root / SLURM_DIR.removeprefix("/tmp/") / "spool").mkdir()
    conf = shared / "slurm.conf"
    conf.write_text(_conf(hosts, cpus))
    # slurmd loads a cgroup plugin even when no plugin of the configuration uses one; v1's loads without a cgroup
    # file system (the hosts' /sys, made by `ip netns exec`, has none) and nothing here calls it
    (shared / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n")
    slurm = Slurm(net, conf, shared)
    try:
        hosts[0].run("slurmctld", env=slurm.env, check=True)  # each daemon forks into the background
        for host in hosts:
            host.run("slurmd", env=slurm.env, check=True)
        _wait_idle(slurm, len(hosts))
    except (AssertionError, RuntimeError, subprocess.TimeoutExpired) as err:
        raise RuntimeError(f"SLURM did not start: {err}\n{slurm.logs()}") from None
    yield slurm


def _conf(hosts, cpus: int) -> str:
    head = hosts[0]
    nodes = "".join(f"NodeName={h.name} NodeAddr={h.ip} CPUs={cpus} State=UNKNOWN\n" for h in hosts)
    return f"""\
ClusterName=p2m
SlurmctldHost={head.name}({head.ip})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={MUNGE_SOCKET},cred_expire={CRED_EXPIRE_S}
StateSaveLocation={SLURM_DIR}/state
SlurmdSpoolDir={SLURM_DIR}/spool
SlurmctldPidFile={SLURM_DIR}/slurmctld.pid
SlurmdPidFile={SLURM_DIR}/slurmd.pid
SlurmctldLogFile={SLURM_DIR}/slurmctld.log
SlurmdLogFile={SLURM_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
KillWait=10
{nodes}PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _wait_idle(slurm: Slurm, count: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        out = slurm.run("a", "sinfo", "--noheader", "--Node", "--format=%N %t", check=False)
        states = dict(line.split() for line in out.stdout.splitlines() if len(line.split()) == 2)
        if len(states) == count and set(states.values()) == {"idle"}:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} idle nodes expected after {START_TIMEOUT_S} s, sinfo: "
                               f"{out.stdout.strip()} {out.stderr.strip()}")
        time.sleep(0.5)
