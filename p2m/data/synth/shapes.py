"""Procedural shape families built from trimesh primitives, each with random proportions per model.

Every family returns a list of :class:`Part` (a watertight primitive and its colour) in ShapeNet's
object frame: Y up, the object's length along Z. Parts may overlap; the renderer sees their union and
the surface sampler drops points that fall inside another part.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh
from trimesh.transformations import rotation_matrix, translation_matrix

_X, _Y, _Z = np.eye(3)


@dataclass
class Part:
    mesh: trimesh.Trimesh
    color: tuple[float, float, float]


def airplane(rng: np.random.Generator) -> list[Part]:
    """A fuselage, swept wings, a tailplane, a fin, and sometimes two engines."""
    length, radius = rng.uniform(0.8, 1.2), rng.uniform(0.045, 0.08)
    span, chord = rng.uniform(0.8, 1.3) * length, rng.uniform(0.14, 0.26)
    sweep = rng.uniform(0.0, 0.45)  # radians, wings swept back towards -Z
    body, trim = _palette(rng, 2)
    parts = [Part(trimesh.creation.capsule(height=length - 2 * radius, radius=radius, count=[24, 12]), body)]
    wing_z, wing_y = rng.uniform(-0.05, 0.12) * length, rng.uniform(-0.6, 0.2) * radius
    for side in (-1, 1):
        wing = trimesh.creation.box(extents=[span / 2, 0.025, chord])
        wing.apply_transform(translation_matrix([side * span / 4, 0, 0]))
        wing.apply_transform(rotation_matrix(side * sweep, _Y))
        wing.apply_transform(translation_matrix([0, wing_y, wing_z]))
        parts.append(Part(wing, trim))
    tail_z = -0.5 * length + 0.6 * chord
    tail_span = span * rng.uniform(0.25, 0.4)
    parts.append(Part(_box([tail_span, 0.02, chord * 0.6], [0, 0, tail_z]), trim))
    fin_h = rng.uniform(0.12, 0.22) * length
    parts.append(Part(_box([0.02, fin_h, chord * 0.7], [0, radius + fin_h / 2 - 0.01, tail_z]), trim))
    if rng.random() < 0.6:
        for side in (-1, 1):
            engine = trimesh.creation.cylinder(radius=radius * 0.55, height=chord * 1.1, sections=16)
            engine.apply_transform(translation_matrix([side * span * 0.22, wing_y - radius * 0.9, wing_z + 0.05]))
            parts.append(Part(engine, body))
    return parts


def chair(rng: np.random.Generator) -> list[Part]:
    """A seat on four legs with a backrest, sometimes with armrests."""
    width, depth = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)
    seat_h, seat_t = rng.uniform(0.35, 0.5), rng.uniform(0.04, 0.08)
    back_h = rng.uniform(0.35, 0.6)
    leg = rng.uniform(0.025, 0.05)
    wood, cloth = _palette(rng, 2)
    parts = [Part(_box([width, seat_t, depth], [0, seat_h, 0]), cloth)]
    for sx in (-1, 1):
        for sz in (-1, 1):
            parts.append(Part(_box([leg, seat_h, leg], [sx * (width - leg) / 2, seat_h / 2, sz * (depth - leg) / 2]), wood))
    tilt = rng.uniform(0.0, 0.25)
    back = trimesh.creation.box(extents=[width, back_h, seat_t])
    back.apply_transform(translation_matrix([0, back_h / 2, 0]))
    back.apply_transform(rotation_matrix(-tilt, _X))
    back.apply_transform(translation_matrix([0, seat_h, -(depth - seat_t) / 2]))
    parts.append(Part(back, cloth))
    if rng.random() < 0.4:
        arm_h = rng.uniform(0.15, 0.25)
        for sx in (-1, 1):
            parts.append(Part(_box([leg, arm_h, leg], [sx * (width - leg) / 2, seat_h + arm_h / 2, (depth - leg) / 2]), wood))
            parts.append(Part(_box([leg * 1.5, leg, depth], [sx * (width - leg) / 2, seat_h + arm_h, 0]), wood))
    return parts


def table(rng: np.random.Generator) -> list[Part]:
    """A rectangular top on four legs, or a round top on a pedestal."""
    height, top_t = rng.uniform(0.5, 0.8), rng.uniform(0.03, 0.07)
    top_c, leg_c = _palette(rng, 2)
    if rng.random() < 0.6:
        width, depth, leg = rng.uniform(0.8, 1.6), rng.uniform(0.5, 0.9), rng.uniform(0.04, 0.08)
        parts = [Part(_box([width, top_t, depth], [0, height - top_t / 2, 0]), top_c)]
        inset = rng.uniform(0.0, 0.08)
        for sx in (-1, 1):
            for sz in (-1, 1):
                parts.append(Part(_box([leg, height - top_t, leg],
                                       [sx * (width / 2 - leg / 2 - inset), (height - top_t) / 2, sz * (depth / 2 - leg / 2 - inset)]), leg_c))
        return parts
    radius = rng.uniform(0.35, 0.6)
    return [Part(_vertical_cylinder(radius, top_t, height - top_t / 2), top_c),
            Part(_vertical_cylinder(rng.uniform(0.03, 0.06), height - top_t, (height - top_t) / 2), leg_c),
            Part(_vertical_cylinder(radius * rng.uniform(0.4, 0.7), 0.03, 0.015), leg_c)]


def car(rng: np.random.Generator) -> list[Part]:
    """A body, a cabin and four wheels."""
    length, width = rng.uniform(0.9, 1.2), rng.uniform(0.4, 0.5)
    body_h, cabin_h = rng.uniform(0.15, 0.25), rng.uniform(0.12, 0.2)
    wheel_r = rng.uniform(0.07, 0.11)
    paint, glass, tyre = _palette(rng, 3)
    clearance = wheel_r * 0.8
    parts = [Part(_box([width, body_h, length], [0, clearance + body_h / 2, 0]), paint)]
    cabin_len = length * rng.uniform(0.4, 0.6)
    parts.append(Part(_box([width * 0.9, cabin_h, cabin_len], [0, clearance + body_h + cabin_h / 2, rng.uniform(-0.15, 0.05) * length]), glass))
    for sx in (-1, 1):
        for sz in (-1, 1):
            wheel = trimesh.creation.cylinder(radius=wheel_r, height=0.06, sections=20)
            wheel.apply_transform(rotation_matrix(np.pi / 2, _Y))
            wheel.apply_transform(translation_matrix([sx * (width / 2 - 0.02), wheel_r, sz * length * 0.33]))
            parts.append(Part(wheel, tyre))
    return parts


def lamp(rng: np.random.Generator) -> list[Part]:
    """A base, a pole and a conical shade."""
    pole_h = rng.uniform(0.6, 1.2)
    base_c, shade_c = _palette(rng, 2)
    shade_r, shade_h = rng.uniform(0.15, 0.3), rng.uniform(0.15, 0.3)
    shade = trimesh.creation.cone(radius=shade_r, height=shade_h, sections=24)
    shade.apply_transform(rotation_matrix(-np.pi / 2, _X))  # apex up (+Y)
    shade.apply_transform(translation_matrix([0, pole_h - shade_h * 0.4, 0]))
    return [Part(_vertical_cylinder(rng.uniform(0.1, 0.2), 0.04, 0.02), base_c),
            Part(_vertical_cylinder(rng.uniform(0.012, 0.025), pole_h, pole_h / 2), base_c),
            Part(shade, shade_c)]


def bottle(rng: np.random.Generator) -> list[Part]:
    """A body, a conical shoulder, a neck and a cap."""
    radius, body_h = rng.uniform(0.1, 0.2), rng.uniform(0.35, 0.6)
    neck_r, neck_h, shoulder_h = radius * rng.uniform(0.25, 0.45), rng.uniform(0.08, 0.18), rng.uniform(0.06, 0.15)
    glass, cap = _palette(rng, 2)
    shoulder = trimesh.creation.cone(radius=radius, height=shoulder_h * 1.6, sections=32)
    shoulder.apply_transform(rotation_matrix(-np.pi / 2, _X))
    shoulder.apply_transform(translation_matrix([0, body_h, 0]))
    top = body_h + shoulder_h
    return [Part(_vertical_cylinder(radius, body_h, body_h / 2), glass),
            Part(shoulder, glass),
            Part(_vertical_cylinder(neck_r, neck_h + shoulder_h, body_h + (neck_h + shoulder_h) / 2 + shoulder_h * 0.5), glass),
            Part(_vertical_cylinder(neck_r * 1.15, 0.04, top + neck_h + 0.02), cap)]


# category name -> (ShapeNet synset id of the real category it imitates, builder)
FAMILIES = {
    "airplane": ("02691156", airplane),
    "chair": ("03001627", chair),
    "table": ("04379243", table),
    "car": ("02958343", car),
    "lamp": ("03636649", lamp),
    "bottle": ("02876657", bottle),
}


def _box(extents, center) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=extents, transform=translation_matrix(center))


def _vertical_cylinder(radius: float, height: float, center_y: float) -> trimesh.Trimesh:
    cyl = trimesh.creation.cylinder(radius=radius, height=height, sections=32)
    cyl.apply_transform(rotation_matrix(-np.pi / 2, _X))
    cyl.apply_transform(translation_matrix([0, center_y, 0]))
    return cyl


def _palette(rng: np.random.Generator, n: int) -> list[tuple[float, float, float]]:
    """n distinct, moderately saturated colours."""
    hues = (rng.uniform() + np.arange(n) / n + rng.uniform(-0.08, 0.08, n)) % 1.0
    sat, val = rng.uniform(0.25, 0.7, n), rng.uniform(0.55, 0.95, n)
    return [tuple(float(c) for c in _hsv_to_rgb(h, s, v)) for h, s, v in zip(hues, sat, val)]


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
