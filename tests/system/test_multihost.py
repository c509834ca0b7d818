"""Three hosts on one machine (issue 29, item 2): network namespaces the test creates (:mod:`netns`), each with its
own address, host name and private /tmp; a Ray cluster across them (head on host A, workers on B and C, one CPU
each, token authentication on); the experiment on an S3-protocol server (moto) on the bridge, the only storage the
hosts share; the head's job server on host A's address. Covered: ``p2m search launch --smoke-test`` from host A
with trials on more than one host; the pre-flight refusing a dataset that host B lacks; a driver SIGKILLed on host A
and ``resume`` from host B; host C losing every process while its trial trains (the trial restored on another host
from its checkpoint in the bucket; host C's worker started again); host B's link down for some seconds while its
trial trains; ``train-best`` and ``results analyze`` run on host C; ``jobs/submit.sh`` run on host B against the
head's job server. Every search's tables hold each (trial, epoch) once.

Runs as root where ``ip netns`` and ``unshare`` work; skipped, saying why, elsewhere.
"""
from __future__ import annotations

import importlib.util
import json
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

# the helpers beside this file, loaded by path (tests/ is no package, and pytest runs with --import-mode=importlib)
_spec = importlib.util.spec_from_file_location("p2m_system_netns", Path(__file__).with_name("netns.py"))
netns = sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(netns)

pytestmark = [pytest.mark.slow, pytest.mark.system, pytest.mark.timeout(600)]

BUCKET = "p2m-test"
S3_PORT = 9000
STORAGE = f"s3://{BUCKET}/multihost"
RESUME_MAX_T = 4
LINK_CUT_S = 10  # how long host B's link is down
DRIVER_TIMEOUT_S = 500  # the most a small search may take


@dataclass
class Cluster:
    net: netns.Network
    address: str  # the Ray head's HOST:PORT, on host A


@pytest.fixture(scope="module")
def cluster():
    reason = netns.unavailable()
    if reason:
        pytest.skip(f"no network namespaces here: {reason}")
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           # the same restore key on every host that may drive the search (search.trust)
           "P2M_RESTORE_KEY": secrets.token_hex(16),
           "AWS_ENDPOINT_URL": f"http://{netns.SUBNET}.1:{S3_PORT}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    with netns.Network("abc", env=env) as net:
        net.bridge_popen([sys.executable, "-m", "moto.server", "-H", net.bridge_ip, "-p", str(S3_PORT)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        net["a"].python(textwrap.dedent(f"""
            import os, socket, time, boto3
            deadline = time.time() + 60
            while True:
                try:
                    socket.create_connection(("{net.bridge_ip}", {S3_PORT}), timeout=1).close()
                    break
                except OSError:
                    assert time.time() < deadline, "moto's S3 server did not start"
                    time.sleep(0.2)
            boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket="{BUCKET}")
            """), timeout=90)
        address = netns.start_ray_head(net["a"])
        netns.start_ray_worker(net["b"], address)
        netns.start_ray_worker(net["c"], address)
        nodes = netns.wait_for_nodes(net["a"], address, 3)
        assert sorted(n["ip"] for n in nodes) == [net[h].ip for h in "abc"], nodes
        yield Cluster(net, address)


def test_hosts_are_apart(cluster):
    """Each host has its own name and /tmp; a Ray driver without the cluster's token is refused."""
    a, b = cluster.net["a"], cluster.net["b"]
    a.run("sh", "-c", "echo a > /tmp/mark", check=True)
    assert b.run("sh", "-c", "hostname; cat /tmp/mark").stdout.split()[0] == "host-b"
    assert b.run("test", "-e", "/tmp/mark").returncode == 1
    refused = b.run(sys.executable, "-c", f"import ray; ray.init(address={cluster.address!r})", timeout=120,
                    env={"RAY_AUTH_TOKEN": "0" * 32})
    assert refused.returncode != 0, refused.stdout[-2000:]


def test_smoke_launch_across_hosts(cluster):
    a = cluster.net["a"]
    result = a.run("p2m", "search", "launch", "--smoke-test", "--address", cluster.address, "--storage-path",
                   STORAGE, "--name", "smoke", "--quiet", timeout=400)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    rows, trials = _tables(a, f"{STORAGE}/smoke")
    assert len(trials) == 2 and set(trials["status"]) == {"TERMINATED"}, trials
    _assert_every_epoch_once(rows, trials, epochs=2)
    assert len({h for h in rows["hostname"]}) > 1, rows[["trial_id", "training_iteration", "hostname"]]
    assert set(rows["node_ip"]) <= {cluster.net[h].ip for h in "abc"}


def test_preflight_refuses_data_missing_on_one_host(cluster):
    a, b, c = (cluster.net[h] for h in "abc")
    a.python("from search.smoke import make_smoke_data; make_smoke_data('/tmp/only-here')", timeout=300)
    shutil.copytree(a.root / "only-here", c.root / "only-here")  # on A and C; B lacks it
    result = a.run("p2m", "search", "launch", "--smoke-test", "--data", "/tmp/only-here", "--address",
                   cluster.address, "--storage-path", STORAGE, "--name", "preflight", "--quiet", timeout=300)
    assert result.returncode == 2, (result.stdout + result.stderr)[-4000:]
    lines = [line for line in result.stderr.splitlines() if "/tmp/only-here" in line]
    assert len(lines) == 1 and f"node {b.ip} (host-b)" in lines[0], result.stderr[-4000:]
    assert a.ip not in lines[0] and c.ip not in lines[0] and "other node" not in lines[0], lines[0]


def test_driver_killed_then_resumed_from_another_host(cluster):
    a, b = cluster.net["a"], cluster.net["b"]
    data = _smoke_data(a)
    cfg = _small_config("resume", data, max_failures=0)
    (a.root / "resume.yaml").write_text(yaml.safe_dump(cfg))
    exp = f"{STORAGE}/resume"
    # on host A: launch, and SIGKILL the driver once 2 rows of 8 are in the bucket
    killed = json.loads(a.python(textwrap.dedent(f"""
        import json, os, signal, subprocess, time
        from results.parquet import ResultsError, read_results
        driver = subprocess.Popen(["p2m", "search", "launch", "--config", "/tmp/resume.yaml", "--address",
                                   "{cluster.address}", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline, seen = time.time() + 300, 0
        while time.time() < deadline and seen < 2 and driver.poll() is None:
            time.sleep(0.5)
            try:
                seen = len(read_results("{exp}", dedupe=False))
            except ResultsError:
                pass
        status = driver.poll()
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        print(json.dumps({{"seen": seen, "status": status}}))
        """), timeout=400).splitlines()[-1])
    assert killed["status"] is None and 2 <= killed["seen"] < 2 * RESUME_MAX_T, killed
    # the dead driver's lease names another host, so host B cannot tell it is dead before its heartbeat is 120 s
    # old (results.lease): refused, naming host A; the operator who knows removes the lease, as the line says
    resume = ("p2m", "search", "resume", exp, "--address", cluster.address, "--quiet")
    refused = b.run(*resume, timeout=300)
    assert refused.returncode == 2 and "another driver holds" in refused.stderr and "on host-a" in refused.stderr, \
        (refused.stdout + refused.stderr)[-4000:]
    b.python(f"from results import storage; storage.delete('{exp}/driver.lease')")
    result = b.run(*resume, timeout=400)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    # a trial resumed from a checkpoint an epoch behind its last row reports that epoch again: the tables keep one
    rows, trials = _tables(b, exp, dedupe=True)
    assert len(trials) == 2 and set(trials["status"]) == {"TERMINATED"}, trials
    _assert_every_epoch_once(rows, trials, epochs=RESUME_MAX_T)
    assert len(set(rows["hostname"])) > 1, rows[["trial_id", "training_iteration", "hostname"]]


def test_worker_host_lost_trial_restored_elsewhere(cluster):
    """Host C loses power (every process on it SIGKILLed) while its trial trains: the search ends, the lost trial
    continues on another host from its last checkpoint in the bucket; then host C's Ray worker is started again."""
    a, c = cluster.net["a"], cluster.net["c"]
    exp = f"{STORAGE}/hostloss"
    driver = _launch(a, cluster, _small_config("hostloss", _smoke_data(a), samples=3, max_failures=1))
    try:
        seen = _wait_for_row(a, exp, c.name)
        killed = c.crash()
        rc = _finish(a, driver, "hostloss")
    finally:
        _ensure_workers(cluster)
    assert rc == 0, _log(a, "hostloss")
    rows, trials = _tables(a, exp)
    assert len(trials) == 3 and set(trials["status"]) == {"TERMINATED"}, trials
    _assert_every_epoch_once(rows, trials, epochs=RESUME_MAX_T)
    lost = rows[rows["trial_id"] == seen["trial_id"]]
    before = lost[lost["hostname"] == c.name]["training_iteration"]
    after = lost[lost["training_iteration"] > before.max()]
    # epochs 1..k on host C, k+1.. elsewhere and none twice: restored from epoch k's checkpoint, not from scratch
    assert killed and 1 <= before.max() < RESUME_MAX_T and list(before) == list(range(1, before.max() + 1)), lost
    assert len(after) and c.name not in set(after["hostname"]), lost
    assert len(set(rows["hostname"])) > 1, rows


def test_worker_link_cut_then_restored(cluster):
    """Host B's link is down for LINK_CUT_S seconds while its trial trains: the search ends with every epoch once,
    whether Ray rode out the cut or declared the node dead and restored the trial elsewhere (the message says)."""
    a, b = cluster.net["a"], cluster.net["b"]
    exp = f"{STORAGE}/linkcut"
    driver = _launch(a, cluster, _small_config("linkcut", _smoke_data(a), samples=3, max_failures=2))
    try:
        seen = _wait_for_row(a, exp, b.name)
        b.link(up=False)
        try:
            time.sleep(LINK_CUT_S)
        finally:
            b.link(up=True)
        rc = _finish(a, driver, "linkcut")
        b_alive = b.ip in _alive(cluster)
    finally:
        _ensure_workers(cluster)
    assert rc == 0, _log(a, "linkcut")
    rows, trials = _tables(a, exp)
    cut = rows[rows["trial_id"] == seen["trial_id"]]
    later = cut[cut["training_iteration"] > seen["training_iteration"]]
    what = (f"node host-b {'alive' if b_alive else 'declared dead'} after a {LINK_CUT_S} s cut; the trial on it "
            f"reported epochs {seen['training_iteration'] + 1}..{RESUME_MAX_T} on {sorted(set(later['hostname']))}; "
            f"the driver's errors: {[line for line in _log(a, 'linkcut').splitlines() if 'rror' in line][:5]}")
    print(what)
    assert len(trials) == 3 and set(trials["status"]) == {"TERMINATED"}, (what, trials)
    _assert_every_epoch_once(rows, trials, epochs=RESUME_MAX_T)
    assert len(set(rows["hostname"])) > 1, (what, rows)


def test_train_best_and_analyze_from_a_third_host(cluster):
    """``train-best`` and ``results analyze`` of a finished search, run on host C (neither drove it)."""
    c = cluster.net["c"]
    exp = _finished_experiment(cluster)
    best = c.run("p2m", "search", "train-best", exp, "--address", cluster.address, "--seeds", "2", "--epochs", "1",
                 "--previews", "0", "--quiet", timeout=500)
    assert best.returncode == 0, (best.stdout + best.stderr)[-4000:]
    analyze = c.run("p2m", "results", "analyze", exp, timeout=400)
    assert analyze.returncode == 0, (analyze.stdout + analyze.stderr)[-4000:]
    out = json.loads(c.python(textwrap.dedent(f"""
        import json
        from p2m.names import RUNS_DIR, TRAIN_BEST_DIR, TRAIN_BEST_RESULTS_FILE
        from results import storage
        from results.parquet import read_results, read_table
        exp = "{exp}"
        seeds = read_table(storage.join(exp, TRAIN_BEST_DIR, TRAIN_BEST_RESULTS_FILE))["seed"].tolist()
        phases = [d for d in storage.subdirs(storage.join(exp, RUNS_DIR)) if d.startswith("train-best")]
        rows = [read_results(storage.join(exp, RUNS_DIR, d), dedupe=False) for d in phases]
        rows = [r[["trial_id", "training_iteration", "seed", "hostname"]].to_dict("records") for r in rows]
        files = [str(f) for f in storage.list_files(storage.join(exp, "analysis"))]
        print(json.dumps({{"seeds": seeds, "rows": rows, "files": files}}))
        """), timeout=180).splitlines()[-1])
    assert len(out["rows"]) == 1, out
    runs = out["rows"][0]
    assert sorted(out["seeds"]) == sorted({r["seed"] for r in runs}) and len(out["seeds"]) == 2, out
    keys = [(r["trial_id"], r["training_iteration"]) for r in runs]
    assert sorted(keys) == sorted({(r["trial_id"], 1) for r in runs}) and len(keys) == 2, runs
    assert len({r["hostname"] for r in runs}) > 1, runs
    names = {f.rsplit("/", 1)[-1] for f in out["files"]}
    assert "report.md" in names and any(n.endswith(".png") for n in names), out["files"]


def test_submit_script_against_the_cluster(cluster):
    """``jobs/submit.sh`` run on host B submits a search to the head's job server; the job's driver runs on the
    head, its trials across the hosts."""
    a, b = cluster.net["a"], cluster.net["b"]
    data = _smoke_data(a)
    cfg = _small_config("submitted", data, samples=2, max_t=2)
    for host in (a, b):  # the head runs the driver; "a search YAML on the shared file system"
        (host.root / "submitted.yaml").write_text(yaml.safe_dump(cfg))
    server = netns.job_server(a)
    b.python(textwrap.dedent(f"""
        import time, urllib.error, urllib.request
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen("{server}/api/version", timeout=5).read()
                raise SystemExit("the job server answers without the cluster's token")
            except urllib.error.HTTPError as exc:  # it answers, and refuses a request without the token
                assert exc.code == 401, exc
                break
            except OSError:
                assert time.time() < deadline, "the head's job server does not answer"
                time.sleep(1)
        """), timeout=180)
    env = {"RAY_ADDRESS": server, "SEARCH_CONFIG": "/tmp/submitted.yaml", "DATA": data, "STORAGE": STORAGE,
           "NAME": "submitted"}
    submit = b.run("bash", netns.REPO / "jobs" / "submit.sh", env=env, timeout=500)
    assert submit.returncode == 0, (submit.stdout + submit.stderr)[-4000:]
    status = b.python(textwrap.dedent(f"""
        from ray.job_submission import JobSubmissionClient
        print(JobSubmissionClient("{server}").get_job_status("submitted"))
        """), timeout=120).split()[-1]
    assert status == "SUCCEEDED", (status, submit.stdout[-4000:])
    rows, trials = _tables(b, f"{STORAGE}/submitted")
    assert len(trials) == 2 and set(trials["status"]) == {"TERMINATED"}, trials
    _assert_every_epoch_once(rows, trials, epochs=2)
    assert len(set(rows["hostname"])) > 1, rows


def _smoke_data(host: netns.Host) -> str:
    """The smoke dataset's path (data.smoke: each trial's node makes its own copy there where it lacks it)."""
    return host.python("from search.smoke import smoke_data; print(smoke_data('s3://x'))", timeout=300).split()[-1]


def _small_config(name: str, data: str, samples: int = 2, max_t: int = RESUME_MAX_T, max_failures: int = 0) -> dict:
    """A search of ``samples`` trials (the published baseline among them) of ``max_t`` epochs, FIFO, one CPU each,
    a checkpoint every epoch, on the smoke dataset, in the bucket."""
    return {"name": name,
            "base": {"profile": "tiny", "data": {"root": data, "smoke": True, "val_limit": 4},
                     "model": {"feature_levels": [1, 2]}, "optim": {"steps_per_epoch": 2}},
            "search": {"num_samples": samples, "max_concurrent": samples, "seed": 0},
            "baselines": {"published": {}},
            "scheduler": {"type": "fifo", "max_t": max_t, "grace_period": 1, "reduction_factor": 2},
            "resources": {"cpu": 1, "gpu": 0}, "failure": {"max_failures": max_failures},
            "storage": {"path": STORAGE}}


def _launch(host: netns.Host, cluster: Cluster, cfg: dict) -> subprocess.Popen:
    """Start ``p2m search launch`` of ``cfg`` on ``host`` (its output in /tmp/<name>.log, its pid there in
    /tmp/<name>.pid)."""
    name = cfg["name"]
    (host.root / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    return host.popen("sh", "-c", f'echo $$ > /tmp/{name}.pid; exec p2m search launch --config /tmp/{name}.yaml '
                      f'--address {cluster.address} --quiet > /tmp/{name}.log 2>&1', stdin=subprocess.DEVNULL)


def _finish(host: netns.Host, driver: subprocess.Popen, name: str, timeout: float = DRIVER_TIMEOUT_S) -> int:
    """The driver's exit status; after ``timeout`` s it is killed (on its host, by its pid) and the test fails."""
    try:
        return driver.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        host.run("sh", "-c", f"kill -KILL $(cat /tmp/{name}.pid)")
        driver.wait(timeout=30)
        pytest.fail(f"the {name} search did not end in {timeout} s:\n{_log(host, name)}")


def _log(host: netns.Host, name: str) -> str:
    path = host.root / f"{name}.log"
    return path.read_text()[-4000:] if path.exists() else f"(no {path})"


def _wait_for_row(host: netns.Host, exp: str, hostname: str, timeout: float = 300) -> dict:
    """Wait (at most ``timeout`` s) until a result row of ``exp`` was reported on ``hostname``; returns its trial
    and epoch."""
    out = host.python(textwrap.dedent(f"""
        import json, time
        from results.parquet import ResultsError, read_results
        deadline = time.time() + {timeout}
        while True:
            try:
                rows = read_results("{exp}", dedupe=False)
                rows = rows[rows["hostname"] == "{hostname}"]
            except ResultsError:
                rows = []
            if len(rows):
                print(json.dumps({{"trial_id": rows["trial_id"].iloc[0],
                                  "training_iteration": int(rows["training_iteration"].max())}}))
                break
            assert time.time() < deadline, "no row from {hostname} in {timeout} s"
            time.sleep(0.5)
        """), timeout=timeout + 60)
    return json.loads(out.splitlines()[-1])


def _alive(cluster: Cluster) -> list[str]:
    """The addresses of the cluster's alive nodes (one per node), asked from host A."""
    out = cluster.net["a"].python(textwrap.dedent(f"""
        import json, ray
        ray.init(address="{cluster.address}", logging_level="ERROR", log_to_driver=False)
        print(json.dumps(sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])))
        """), timeout=120)
    return json.loads(out.splitlines()[-1])


def _ensure_workers(cluster: Cluster, timeout: float = 120) -> None:
    """Bring back hosts B and C where the cluster lost them: every process left on them killed, its Ray worker
    started again; returns once the cluster has one alive node on each host (at most ``timeout`` s)."""
    want = sorted(cluster.net[h].ip for h in "abc")
    deadline = time.time() + timeout
    alive = _alive(cluster)
    while alive != want:
        for key in "bc":
            host = cluster.net[key]
            if host.ip not in alive:
                host.crash()
                netns.start_ray_worker(host, cluster.address)
        assert time.time() < deadline, f"alive nodes {alive}, not {want}, after {timeout} s"
        time.sleep(2)
        alive = _alive(cluster)


def _finished_experiment(cluster: Cluster) -> str:
    """A finished search of :func:`_small_config` in the bucket (an earlier test's), made here when there is none."""
    a = cluster.net["a"]
    for name in ("resume", "hostloss", "linkcut"):
        exp = f"{STORAGE}/{name}"
        done = a.python(textwrap.dedent(f"""
            from results.parquet import ResultsError, read_trials
            try:
                print(set(read_trials("{exp}")["status"]) == {{"TERMINATED"}})
            except (ResultsError, OSError, KeyError):
                print(False)
            """), timeout=120).split()[-1]
        if done == "True":
            return exp
    driver = _launch(a, cluster, _small_config("finished", _smoke_data(a)))
    assert _finish(a, driver, "finished") == 0, _log(a, "finished")
    return f"{STORAGE}/finished"


def _tables(host: netns.Host, exp: str, dedupe: bool = False):
    """The experiment's result rows (every row written, unless ``dedupe``) and trials table, read on ``host``."""
    import pandas as pd

    out = host.python(textwrap.dedent(f"""
        from results.parquet import read_results, read_trials
        rows = read_results("{exp}", dedupe={dedupe})[["trial_id", "training_iteration", "hostname", "node_ip"]]
        trials = read_trials("{exp}")[["trial_id", "status"]]
        print(rows.to_json(orient="records"))
        print(trials.to_json(orient="records"))
        """), timeout=180).splitlines()
    return pd.DataFrame(json.loads(out[-2])), pd.DataFrame(json.loads(out[-1]))


def _assert_every_epoch_once(rows, trials, epochs: int) -> None:
    keys = list(zip(rows["trial_id"], rows["training_iteration"]))
    assert len(keys) == len(set(keys)), sorted(keys)
    assert sorted(keys) == sorted((t, e) for t in trials["trial_id"] for e in range(1, epochs + 1)), sorted(keys)
