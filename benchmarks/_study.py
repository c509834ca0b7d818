"""Helpers shared by the study scripts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


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
