"""Synthetic data in the ShapeNet-P2M format: procedural shapes, ray-cast views, surface samples."""
from p2m.data.synth.generate import SynthConfig, SynthReport, generate
from p2m.data.synth.shapes import FAMILIES

__all__ = ["FAMILIES", "SynthConfig", "SynthReport", "generate"]
