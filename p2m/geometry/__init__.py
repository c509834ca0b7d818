"""Geometry: nearest neighbours, chamfer distance, mesh losses and metrics (pure torch ops)."""
from p2m.geometry.chamfer import Chamfer, chamfer_distance
from p2m.geometry.knn import gather_points, nearest_indices, nearest_sq_dists

__all__ = ["Chamfer", "chamfer_distance", "gather_points", "nearest_indices", "nearest_sq_dists"]
