"""The ShapeNet-P2M data layer: the real format, its camera, validation, and synthetic data.

The torch ``Dataset`` lives in :mod:`p2m.data.dataset` (imported on demand, so the command-line
tools that only read files start without torch).
"""
from p2m.data.camera import project
from p2m.data.datfile import load_pickle, read_dat, write_dat
from p2m.data.errors import DataError
from p2m.data.image import read_image
from p2m.data.layout import Sample, available_splits, find_samples

__all__ = ["DataError", "Sample", "available_splits", "find_samples", "load_pickle", "project", "read_dat",
           "read_image", "write_dat"]
