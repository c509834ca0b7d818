"""Helpers shared by the study and benchmark scripts."""
from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from p2m.names import (PREVIEWS_DIR, RESULTS_DIR, SETTINGS_FILE, SPACE_FILE, SYNTH_META_FILE, TRAIN_BEST_DIR,
                       TRIALS_FILE)
from results.parquet import read_trials
from results.trials import pick_best

EVIDENCE = Path(__file__).resolve().parent / "evidence"  # the committed outputs of the studies, which BENCHMARKS.md links


def run(cmd: list[str]) -> None:
    """Run a command of this environment (``p2m`` next to the running Python), echoing it; raise on failure."""
    print("$", " ".join(cmd), flush=True)
    exe = Path(sys.executable).parent / cmd[0]
    subprocess.run([str(exe) if exe.exists() else cmd[0], *cmd[1:]], check=True)


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def write_verdict(lines: list[str], path: Path) -> int:
    """Print the verdict and keep it beside the study's tables; the script's exit status (0)."""
    text = "\n".join(lines)
    print(text)
    path.write_text(text + "\n")
    return 0


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synth_data(path: Path, models_per_category: int, views: int, seed: int) -> Path:
    """A synthetic dataset at ``path`` (made once: kept when it is there)."""
    if not (path / SYNTH_META_FILE).is_file():
        subprocess.run([sys.executable, "-m", "p2m.cli", "data", "synth", "--out", str(path), "--models-per-category",
                        str(models_per_category), "--views", str(views), "--seed", str(seed)], check=True,
                       capture_output=True)
    return path


def search_config(path: Path, name: str, storage: Path, base: dict, search: dict, scheduler: dict,
                  baselines: dict | None = None, cpu: float = 1, max_failures: int = 1) -> Path:
    """A study's search YAML at ``path``, written as a user writes one (``docs/search-config.md``): ``base`` is the
    training config's sections, ``search`` and ``scheduler`` those sections; baselines ``published`` unless
    given; trials of ``cpu`` CPUs and no GPU; the experiment ``storage/name``."""
    cfg = {"name": name, "base": base, "search": search,
           "baselines": {"published": {}} if baselines is None else baselines, "scheduler": scheduler,
           "resources": {"cpu": cpu, "gpu": 0}, "failure": {"max_failures": max_failures},
           "storage": {"path": str(storage)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def copy_tables(exp: Path, dest: Path) -> None:
    """The experiment's Parquet tables, settings and preview PNGs (small), not its checkpoints or meshes;
    also train-best's results and previews when it has run."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(exp / RESULTS_DIR, dest / RESULTS_DIR, dirs_exist_ok=True)
    for name in (TRIALS_FILE, SETTINGS_FILE, SPACE_FILE):
        shutil.copy2(exp / name, dest / name)
    best = pick_best(read_trials(exp))["trial_id"]  # the only trial whose previews the report shows
    for png in [*exp.glob(f"{PREVIEWS_DIR}/{best}/{PREVIEWS_DIR}/*.png"),
                *exp.glob(f"{TRAIN_BEST_DIR}*/seed*/{PREVIEWS_DIR}/*.png"),
                *exp.glob(f"{TRAIN_BEST_DIR}*/results.parquet")]:
        target = dest / png.relative_to(exp)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(png, target)
