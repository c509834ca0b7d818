"""jobs/: every template parses, names commands the CLI has, and the SLURM script really starts Ray and runs
a search (with fake ``srun``/``scontrol`` on one "node", Ray on 127.0.0.1)."""
import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml

from p2m.cli import build_parser
from search.config import search_config_from_dict

JOBS = Path(__file__).resolve().parents[2] / "jobs"


def _parses_as_p2m(argv: list[str]) -> None:
    """argv (starting with "p2m") is accepted by the real CLI parser and reaches a command."""
    assert argv[0] == "p2m", argv
    args = build_parser().parse_args(argv[1:])
    assert callable(getattr(args, "func", None)), argv
    assert args.func.__name__ not in ("<lambda>",), f"{argv} names a command group, not a command"


@pytest.mark.parametrize("template", ["ray-cluster.yaml", "ray-cluster-s3.yaml"])
def test_cluster_launcher_yaml_is_valid_for_ray(template):
    cfg = yaml.safe_load((JOBS / template).read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)  # Ray's own schema for `ray up`
    assert cfg["head_node_type"] in cfg["available_node_types"]
    gpu = [t for t in cfg["available_node_types"].values() if t.get("resources", {}).get("GPU")]
    assert gpu and gpu[0]["max_workers"] <= cfg["max_workers"]
    assert any("pip install" in c for c in cfg["setup_commands"])
    assert any("--dashboard-host=127.0.0.1" in c for c in cfg["head_start_ray_commands"])
    starts = cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token ray start" in c for c in starts if "ray start" in c)
    assert "~/.ray/auth_token" in cfg["file_mounts"]
    if template.endswith("-s3.yaml"):  # no shared file system: the data from the bucket, S3 rights per node
        assert not any("mount" in c for c in cfg["setup_commands"])
        assert any(c.startswith("aws s3 sync") for c in cfg["setup_commands"])
        assert all(t["node_config"]["IamInstanceProfile"] for t in cfg["available_node_types"].values())


def test_kuberay_rayjob_names_a_real_command_and_a_valid_search_config():
    docs = list(yaml.safe_load_all((JOBS / "kuberay-rayjob.yaml").read_text()))
    job = next(d for d in docs if d["kind"] == "RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    _parses_as_p2m(shlex.split(job["spec"]["entrypoint"]))
    spec = job["spec"]["rayClusterSpec"]
    worker = spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        env = {e["name"]: e for e in group["template"]["spec"]["containers"][0]["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
    mounts = {m["mountPath"] for m in spec["headGroupSpec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert {"/shared", "/config"} <= mounts
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    search = search_config_from_dict(yaml.safe_load(config["data"]["search.yaml"]), source="ConfigMap")
    assert search.gpu == 0.5 and search.max_failures >= 1 and search.storage_path == "/shared/experiments"


def test_kuberay_object_storage_variant_uses_the_bucket_and_no_shared_volume():
    docs = list(yaml.safe_load_all((JOBS / "kuberay-rayjob-s3.yaml").read_text()))
    job = next(d for d in docs if d["kind"] == "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    _parses_as_p2m(argv)
    assert argv[argv.index("--storage-path") + 1].startswith("s3://")
    spec = job["spec"]["rayClusterSpec"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        assert not any("persistentVolumeClaim" in v for v in pod["volumes"])
        env = {e["name"] for e in pod["containers"][0]["env"]}
        assert {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= env
        fetch = pod["initContainers"][0]
        assert fetch["args"][:2] == ["s3", "sync"] and fetch["args"][-1] == argv[argv.index("--data") + 1]
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    search = search_config_from_dict(yaml.safe_load(config["data"]["search.yaml"]), source="ConfigMap")
    assert search.storage_path.startswith("s3://") and search.base.data.root == "/data"


def test_submit_script_runs_ray_job_submit_with_a_real_command(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ray").write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    (fake / "ray").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "NAME": "n1"}
    out = subprocess.run(["bash", str(JOBS / "submit.sh"), "--num-samples", "8"], capture_output=True, text=True,
                         env=env, check=True).stdout
    argv = json.loads(out)
    assert argv[:3] == ["job", "submit", "--address"] and "--" in argv
    command = argv[argv.index("--") + 1:]
    _parses_as_p2m(command)
    assert command[-2:] == ["--num-samples", "8"] and "--address" in command


def test_slurm_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(JOBS / "slurm.sbatch")], check=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.system  # a Ray cluster started by the job script: the real-cluster stage
@pytest.mark.timeout(600)
def test_slurm_script_starts_ray_and_runs_then_resumes_the_search(tmp_path, synth_dir, ray_env, search_yaml):
    """One "node" (this machine): the script's Ray start-up, wait, launch, analysis; then the same job again
    (a requeue) resumes the experiment instead of starting a second one."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text('#!/usr/bin/env bash\n[[ "$1 $2" == "show hostnames" ]] && tr " " "\\n" <<< "$3"\n')
    # srun -w NODE CMD...: run CMD here (every node of this fake allocation is this machine)
    (fake / "srun").write_text('#!/usr/bin/env bash\nwhile [[ "$1" == -* ]]; do [[ "$1" == -w ]] && shift; shift; '
                               'done\nexec "$@"\n')
    for f in fake.iterdir():
        f.chmod(0o755)
    cfg = search_yaml(tmp_path / "s.yaml", synth_dir, tmp_path / "unused",
                      search={"num_samples": 2, "max_concurrent": 2}, baselines={"published": {}},
                      scheduler={"type": "asha", "max_t": 2, "grace_period": 1, "reduction_factor": 2})
    env = {**ray_env, "PATH": f"{fake}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Ray's single-machine mode: everything on 127.0.0.1
           "SLURM_JOB_NODELIST": "node0", "SLURM_JOB_ID": "4242", "SLURM_CPUS_PER_TASK": "2",
           "P2M_ENV": str(tmp_path / "no-env"), "P2M_HEAD_IP": "127.0.0.1", "RAY_PORT": str(_free_port()),
           "SEARCH_CONFIG": str(cfg), "DATA": str(synth_dir), "STORAGE": str(tmp_path / "exp"),
           "P2M_RAY_START_ARGS": f"--temp-dir={ray_env['RAY_TMPDIR']} --disable-usage-stats"}
    # a first job killed before Ray's first snapshot (here: its study database could not be opened) leaves the
    # experiment's settings and nothing to resume; the requeued job must launch it again, not fail on a resume
    exp = tmp_path / "exp" / "p2m-4242"
    broken = tmp_path / "broken.yaml"
    settings = yaml.safe_load(cfg.read_text())
    settings["storage"]["optuna_url"] = "sqlite:////nonexistent-dir/x/study.db"
    broken.write_text(yaml.safe_dump(settings))
    killed = subprocess.run([str(Path(sys.executable).parent / "p2m"), "search", "launch", "--config", str(broken),
                             "--data", str(synth_dir), "--storage-path", str(tmp_path / "exp"), "--name", "p2m-4242",
                             "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert killed.returncode != 0 and (exp / "search_config.yaml").is_file(), killed.stderr[-2000:]
    first = subprocess.run(["bash", str(JOBS / "slurm.sbatch")], capture_output=True, text=True, env=env,
                           timeout=500)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "1 node(s), Ray head node0 at 127.0.0.1:" in first.stdout
    assert "its launch stopped before Ray's first snapshot; starting it again" in first.stdout
    assert (exp / "trials.parquet").is_file() and (exp / "analysis" / "report.md").is_file()
    again = subprocess.run(["bash", str(JOBS / "slurm.sbatch")], capture_output=True, text=True, env=env,
                           timeout=500)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"{exp} exists: resuming it" in again.stdout
    assert not (tmp_path / "exp" / "p2m-4242-2").exists() and len(list((tmp_path / "exp").iterdir())) == 1


def test_the_installed_ray_has_the_job_server_and_its_sdk():
    """jobs/submit.sh's ``ray job submit`` and the head's job server need Ray's ``default`` extra (issue 29): without
    it the SDK refuses with "The Ray jobs CLI & SDK require the ray[default] installation" before it even tries the
    address. The cluster-launcher templates pip install p2m-search, so they get what setup.cfg requires."""
    from importlib import metadata

    from packaging.requirements import Requirement

    from ray.job_submission import JobSubmissionClient  # noqa: F401  (imports even without the extra)

    ours = [Requirement(r) for r in metadata.requires("p2m-search") if Requirement(r).name == "ray"]
    assert ours and {"default", "tune"} <= ours[0].extras, ours
    missing = []
    for line in metadata.requires("ray"):
        req = Requirement(line)
        if req.marker is None or not req.marker.evaluate({"extra": "default"}) or req.marker.evaluate({"extra": ""}):
            continue  # not a requirement of the default extra, or one Ray needs anyway
        try:
            if not req.specifier.contains(metadata.version(req.name), prereleases=True):
                missing.append(f"{req} (installed {metadata.version(req.name)})")
        except metadata.PackageNotFoundError:
            missing.append(str(req))
    assert not missing, f"ray[default] is not fully installed: {missing}"
    ray_cli = str(Path(sys.executable).parent / "ray")
    assert subprocess.run([ray_cli, "job", "submit", "--help"], capture_output=True, timeout=60).returncode == 0
    # the command submit.sh runs, against an address where nothing listens: it gets as far as connecting
    closed = subprocess.run([ray_cli, "job", "submit", "--address", f"http://127.0.0.1:{_free_port()}", "--no-wait",
                             "--", "true"], capture_output=True, text=True, timeout=60)
    assert closed.returncode != 0 and "ray[default]" not in closed.stdout + closed.stderr, closed.stderr[-2000:]
    assert "Failed to connect" in closed.stdout + closed.stderr, closed.stderr[-2000:]
    for template in ("ray-cluster.yaml", "ray-cluster-s3.yaml"):  # p2m-search itself, so its Ray extras too
        setup = yaml.safe_load((JOBS / template).read_text())["setup_commands"]
        assert any("pip install" in c and "p2m-search" in c for c in setup), template
        assert not any("pip install" in c and "ray[" in c for c in setup), template
