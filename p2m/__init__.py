"""p2m: Pixel2Mesh data, geometry, model and training. Never imports Ray."""

__version__ = "0.1.0"
