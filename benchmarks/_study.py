"""Helpers shared by the study and benchmark scripts."""
from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

from p2m.names import SYNTH_META_FILE


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
