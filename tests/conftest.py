"""Shared fixtures: the real ShapeNet-P2M sample and a small synthetic dataset."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLE_DIR = REPO.parent / "shared" / "fixtures" / "shapenet_p2m_sample"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real sample (5 airplanes x 5 views); P2M_SAMPLE_DIR overrides where it lies."""
    path = Path(os.environ.get("P2M_SAMPLE_DIR", DEFAULT_SAMPLE_DIR))
    if not (path / "02691156").is_dir():
        pytest.skip(f"real ShapeNet-P2M sample not found at {path} (set P2M_SAMPLE_DIR)")
    return path


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """3 models x 2 views of every synthetic category, original layout with split lists."""
    from p2m.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth") / "data"
    generate(SynthConfig(out=str(out), models_per_category=3, views=2, seed=7, workers=2), progress=False)
    return out
