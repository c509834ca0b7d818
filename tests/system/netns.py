"""Hosts on one machine for the multi-host tests: Linux network namespaces that the test creates and deletes.

A :class:`Network` is a bridge in a namespace of its own (``<prefix>br``, the bridge at ``.1`` of
:data:`SUBNET`) and one namespace per host, each joined to the bridge by a veth pair and given its own address.
Nothing is routed anywhere else: the namespaces have no default route and no link to the machine's own
namespace, so their traffic stays between them. Each host has a holder process (:meth:`Network._hold`)::

    ip netns exec <ns> unshare --pid --fork --mount-proc --uts --mount sh -c \
        'mount --rbind <host dir> /tmp; hostname <name>; exec sleep infinity'

and every command on the host is ``nsenter``-ed into the holder's namespaces, so it has the host's address, the
host's name (``os.uname``, which Ray records as a result's ``hostname``), the host's process table (PID 1 is the
holder; Ray's driver finds "its" raylet by listing processes, and on a shared table a driver on host B attaches to
host A's head) and the host's private ``/tmp`` (a directory of its own bind-mounted there, seen by no other host);
``HOME``, the caches and Ray's session files all lie in that ``/tmp``. The repository and its virtual environment
are the same on every host (software installed on each machine): where they lie under ``/tmp`` (a fresh clone), they
are bound into each host's ``/tmp`` at the same path.

Teardown (:meth:`Network.close`, run by the context manager whatever happens): every process of each namespace
(``ip netns pids``, the holder included) is killed by pid, then the namespace is deleted, then the host directories. Namespaces left
by a test process that died without its teardown (SIGKILL) are removed by the next :class:`Network`: their names
carry the pid of the process that made them.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "p2mh"  # every namespace of these tests: p2mh<pid>-<name>
SUBNET = "10.88.0"  # a /24 inside the namespaces only; the bridge is .1, hosts .11, .12, ...
RAY_PORT = 6379
DASHBOARD_PORT = 8265  # the head's dashboard and job server
VENV_BIN = str(Path(sys.executable).parent)
REPO = Path(__file__).resolve().parents[2]


def unavailable() -> str | None:
    """Why namespaces cannot be made here (a reason for ``pytest.skip``), or None."""
    if os.geteuid() != 0:
        return "needs root (creates network namespaces)"
    for tool in ("ip", "unshare", "nsenter", "mount", "hostname"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add fails: {made.stderr.strip()}"
    try:
        run = subprocess.run(["ip", "netns", "exec", probe, "unshare", "--pid", "--fork", "--mount-proc", "--uts",
                              "--mount", "true"], capture_output=True, text=True, timeout=30)
        if run.returncode != 0:
            return f"unshare --pid --uts --mount in a namespace fails: {run.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@dataclass
class Host:
    """One host: its namespace, address, host name, private directory (its ``/tmp``) and ``holder``, the pid (in
    the machine's PID namespace) of the process that keeps the host's PID, mount and UTS namespaces: PID 1 there."""
    name: str
    ns: str
    ip: str
    root: Path
    env: dict = field(default_factory=dict)  # added to every command's environment
    holder: int = 0

    def argv(self, args) -> list[str]:
        """``args`` as a command run on this host (nsenter forks it into the host's PID namespace)."""
        return ["nsenter", f"--target={self.holder}", "--mount", "--uts", "--pid", "--net", "--", "/bin/sh", "-c",
                'cd /tmp && exec "$@"', "sh", *map(str, args)]

    def environ(self, **extra) -> dict:
        """A clean environment for this host: HOME, caches and config under its /tmp, nothing of the caller's."""
        env = {"PATH": f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LANG": "C.UTF-8", "HOME": "/tmp/home", "XDG_CONFIG_HOME": "/tmp/config",
               "XDG_CACHE_HOME": "/tmp/cache", "P2M_CACHE_DIR": "/tmp/cache/p2m", "PYTHONUNBUFFERED": "1",
               "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
        return {**env, **self.env, **{k: str(v) for k, v in extra.items()}}

    def run(self, *args, timeout: float = 120, env: dict | None = None, check: bool = False):
        """Run a command on this host and wait (at most ``timeout`` s); returns the CompletedProcess."""
        proc = subprocess.run(self.argv(args), capture_output=True, text=True, timeout=timeout,
                              env=self.environ(**(env or {})))
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.name}: {' '.join(map(str, args))} exited {proc.returncode}:\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def popen(self, *args, env: dict | None = None, **kwargs) -> subprocess.Popen:
        """Start a command on this host (the Popen's pid is nsenter's, in the machine's PID namespace)."""
        return subprocess.Popen(self.argv(args), env=self.environ(**(env or {})), **kwargs)

    def python(self, code: str, timeout: float = 120, env: dict | None = None) -> str:
        """Run Python code on this host; returns its stdout (fails on a non-zero exit)."""
        return self.run(sys.executable, "-c", code, timeout=timeout, env=env, check=True).stdout

    def pids(self) -> list[int]:
        return namespace_pids(self.ns)

    def crash(self, timeout: float = 20) -> list[int]:
        """SIGKILL every process running on the host (those of its PID namespace) but its holder, by pid, until
        none is left (at most ``timeout`` s): the machine lost power and came back with nothing running (its /tmp
        kept); returns the pids killed."""
        mine = os.readlink(f"/proc/{self.holder}/ns/pid")
        killed: list[int] = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            left = []
            for pid in self.pids():
                try:
                    if pid != self.holder and os.readlink(f"/proc/{pid}/ns/pid") == mine:
                        left.append(pid)
                except OSError:  # gone meanwhile
                    pass
            if not left:
                break
            for pid in left:
                _kill(pid)
            killed += [pid for pid in left if pid not in killed]
            time.sleep(0.2)
        return killed

    def link(self, up: bool) -> None:
        """Bring the host's link to the bridge (its ``eth0``) down or up again (its address is kept)."""
        _ip("-n", self.ns, "link", "set", "eth0", "up" if up else "down")


class Network:
    """A bridge and hosts ``names`` (a, b, c...) on it; use as a context manager (teardown on any exit)."""

    def __init__(self, names, env: dict | None = None):
        sweep_stale()
        self.tag = f"{PREFIX}{os.getpid()}"
        self.bridge_ns = f"{self.tag}-br"
        self.bridge_ip = f"{SUBNET}.1"
        self.base = Path(tempfile.mkdtemp(prefix=f"{self.tag}-", dir="/tmp"))
        self.hosts: dict[str, Host] = {}
        self._names = list(names)
        self._env = dict(env or {})
        self._spawned: list[subprocess.Popen] = []

    def __enter__(self) -> "Network":
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def _create(self) -> None:
        _ip("netns", "add", self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "set", "lo", "up")
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "addr", "add", f"{self.bridge_ip}/24", "dev", "br0")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for i, name in enumerate(self._names):
            ns, ip = f"{self.tag}-{name}", f"{SUBNET}.{11 + i}"
            _ip("netns", "add", ns)
            # made inside the bridge's namespace, one end moved straight into the host's: no name in the machine's
            _ip("-n", self.bridge_ns, "link", "add", f"v{name}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.bridge_ns, "link", "set", f"v{name}", "master", "br0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            root = self.base / name
            root.mkdir(mode=0o1777)
            os.chmod(root, 0o1777)
            host = Host(name=f"host-{name}", ns=ns, ip=ip, root=root, env=dict(self._env))
            host.holder = self._hold(host)
            self.hosts[name] = host

    def _hold(self, host: Host, timeout: float = 30) -> int:
        """Start the process that holds ``host``'s namespaces: a new PID namespace (its own process table: Ray
        finds "its" raylet by listing processes), /proc for it, the host's name, its directory bound on /tmp;
        returns its pid, PID 1 of that namespace (when it dies the kernel kills every process in it)."""
        # what lies under /tmp and every host must still see there (a clone of the repository and its virtual
        # environment may): bound into the host's directory first, then the directory with its binds onto /tmp
        keep = [str(p) for p in dict.fromkeys((REPO, Path(sys.prefix).resolve())) if p.is_relative_to("/tmp")]
        script = ('root="$0"; name="$1"; shift; for keep in "$@"; do dst="$root${keep#/tmp}"; '
                  'mkdir -p "$dst" && mount --bind "$keep" "$dst" || exit 1; done; '
                  'mount --rbind "$root" /tmp && hostname "$name" && exec sleep infinity')
        proc = subprocess.Popen(["ip", "netns", "exec", host.ns, "unshare", "--pid", "--fork", "--mount-proc",
                                 "--uts", "--mount", "--", "/bin/sh", "-c", script, str(host.root), host.name, *keep],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._spawned.append(proc)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
                if children and Path(f"/proc/{children[0]}/comm").read_text().strip() == "sleep":
                    return int(children[0])
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"{host.name}: its namespaces could not be made: {proc.stderr.read().strip()}")
            time.sleep(0.05)
        raise RuntimeError(f"{host.name}: its namespaces were not ready after {timeout} s")

    def bridge_popen(self, args, **kwargs) -> subprocess.Popen:
        """Start a command in the bridge's namespace (a server every host reaches at :attr:`bridge_ip`)."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.bridge_ns, *map(str, args)], **kwargs)
        self._spawned.append(proc)
        return proc

    def close(self) -> None:
        """Kill every process in the namespaces (by pid), delete them and the host directories; never raises."""
        for proc in self._spawned:
            _kill(proc.pid)
        namespaces = [h.ns for h in self.hosts.values()] + [self.bridge_ns]
        namespaces += [ns for ns in list_namespaces() if ns.startswith(f"{self.tag}-") and ns not in namespaces]
        for ns in namespaces:
            teardown_namespace(ns)
        for proc in self._spawned:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.base, ignore_errors=True)


def start_ray_head(host: Host, num_cpus: int = 1, timeout: float = 120, dashboard: bool = True) -> str:
    """``ray start --head`` on ``host``; returns the cluster's address HOST:PORT. With ``dashboard`` (the default)
    the dashboard and its job server listen on the host's address, ``http://<ip>:DASHBOARD_PORT``
    (:func:`job_server`, for ``ray job submit``)."""
    web = ["--include-dashboard=false"]
    if dashboard:
        web = ["--include-dashboard=true", f"--dashboard-host={host.ip}", f"--dashboard-port={DASHBOARD_PORT}"]
    host.run("ray", "start", "--head", f"--node-ip-address={host.ip}", f"--port={RAY_PORT}", f"--num-cpus={num_cpus}",
             *web, "--disable-usage-stats", timeout=timeout, check=True)
    return f"{host.ip}:{RAY_PORT}"


def job_server(head: Host) -> str:
    """The job server's address of a head started by :func:`start_ray_head` with its dashboard."""
    return f"http://{head.ip}:{DASHBOARD_PORT}"


def start_ray_worker(host: Host, address: str, num_cpus: int = 1, timeout: float = 120) -> None:
    host.run("ray", "start", f"--address={address}", f"--node-ip-address={host.ip}", f"--num-cpus={num_cpus}",
             "--disable-usage-stats", timeout=timeout, check=True)


def wait_for_nodes(host: Host, address: str, count: int, timeout: float = 120) -> list[dict]:
    """Wait from ``host`` until the cluster at ``address`` has ``count`` alive nodes; returns their
    (NodeManagerAddress, NodeName) pairs."""
    code = f"""
import json, time, ray
ray.init(address={address!r}, logging_level="ERROR", log_to_driver=False)
deadline = time.time() + {timeout}
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= {count} or time.time() > deadline:
        break
    time.sleep(0.5)
print(json.dumps([{{"ip": n["NodeManagerAddress"], "name": n["NodeManagerHostname"]}} for n in alive]))
"""
    nodes = __import__("json").loads(host.python(code, timeout=timeout + 60).strip().splitlines()[-1])
    if len(nodes) < count:
        raise AssertionError(f"{len(nodes)} of {count} Ray nodes alive after {timeout} s: {nodes}")
    return nodes


def list_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def namespace_pids(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]


def teardown_namespace(ns: str, timeout: float = 20) -> None:
    """SIGKILL every process in ``ns`` (until none is left, at most ``timeout`` s), then delete ``ns``."""
    deadline = time.time() + timeout
    while True:
        pids = namespace_pids(ns)
        if not pids or time.time() > deadline:
            break
        for pid in pids:
            _kill(pid)
        time.sleep(0.2)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def sweep_stale() -> None:
    """Remove the namespaces (and host directories) of test processes that died without tearing them down."""
    pattern = re.compile(rf"^{PREFIX}(\d+)-")
    for ns in list_namespaces():
        match = pattern.match(ns)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            teardown_namespace(ns)
    for path in Path("/tmp").glob(f"{PREFIX}*-*"):
        match = pattern.match(path.name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            shutil.rmtree(path, ignore_errors=True)


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
