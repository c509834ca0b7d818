"""The Pixel2Mesh model: ResNet-18 features, perceptual pooling, three graph-convolution blocks."""
from p2m.model.pixel2mesh import LevelGraph, MeshOutput, Pixel2Mesh
from p2m.model.template import MeshLevel, Template, build_template, unpool

__all__ = ["LevelGraph", "MeshLevel", "MeshOutput", "Pixel2Mesh", "Template", "build_template", "unpool"]
