"""The Pixel2Mesh model: template, graph unpooling (so far)."""
from p2m.model.template import MeshLevel, Template, build_template, unpool

__all__ = ["MeshLevel", "Template", "build_template", "unpool"]
