"""One configuration object for data, model, losses and optimisation.

It flows one way: CLI / YAML -> :class:`TrainConfig` -> search space (``dataclasses.replace``) ->
trainable -> :func:`p2m.train.fit`. Every section checks its own values in ``__post_init__`` and names
the key it refuses. The loss weights are flat fields ``w{stage}_{term}`` (spelt by :func:`p2m.names.weight`)
so that a search can set them by name and a results table can store them as columns: the 12 searched
ones (chamfer, edge, Laplacian, normal at each stage) and the reference's move term ``w{stage}_move``,
fixed by default.
"""
from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field

import yaml

from p2m import yamlio
from p2m.atomic import atomic_write_bytes
from p2m.codec import coerce, flatten, to_plain
from p2m.names import (EDGE_FORMS, FIXED_WEIGHTS, FORM_P2M, LAPLACIAN_FORMS, NORMAL_FORMS, WEIGHTS, pred_samples_field,
                       weight)
PROFILES = ("tiny", "cpu", "paper")


def weight_key(stage: int, term: str) -> str:
    """The config field of one loss weight, e.g. ``weight_key(2, "edge") == "w2_edge"``."""
    return weight(stage, term).field


WEIGHT_KEYS = tuple(w.field for w in WEIGHTS)  # the 12 searched weights
FIXED_WEIGHT_KEYS = tuple(w.field for w in FIXED_WEIGHTS)


@dataclass(frozen=True)
class DataConfig:
    root: str = ""  # dataset directory (ShapeNet-P2M layout); empty until given
    train_split: str = "train"
    val_split: str = "val"
    gt_samples: int = 9000  # GT points per item in training batches (the P2M files have ~7.5-9.2k)
    image_size: int = 224  # model input side in pixels
    num_workers: int = 0  # DataLoader processes
    val_limit: int = 0  # validate on the first this-many views of the val split (0 = all)
    # the seeded smoke dataset of `p2m search launch --smoke-test` (no --data): a search trial on a node without it
    # makes its own copy in that node's cache (search/smoke.py); p2m train reads root as given
    smoke: bool = False

    def __post_init__(self):
        _finite(self)
        _positive(self, "gt_samples", "image_size")
        _non_negative(self, "num_workers", "val_limit")


@dataclass(frozen=True)
class ModelConfig:
    hidden_dim: int = 192  # graph-convolution width (the paper: 192 hidden, 3-d output)
    layers_per_block: int = 14  # graph convolutions per deformation block (the paper: 14)
    template: str = "generated"  # "generated" (trimesh ellipsoid) or a path to info_ellipsoid.dat
    mesh_pos: tuple[float, float, float] = (0.0, 0.0, -0.8)  # where the template's centre sits in the camera frame
    backbone_weights: str = ""  # local ResNet-18 ImageNet weights; empty = random init (with a warning)
    feature_levels: tuple[int, ...] = (1, 2, 3, 4)  # ResNet stages pooled per vertex
    backbone_norm: str = "auto"  # auto (frozen BN with weights, GroupNorm without), batch, frozen, group

    def __post_init__(self):
        _finite(self)
        _positive(self, "hidden_dim", "layers_per_block")
        if len(self.mesh_pos) != 3:
            raise ValueError(f"mesh_pos must have 3 values, got {self.mesh_pos!r}")
        _choice(self, "backbone_norm", ("auto", "batch", "frozen", "group"))
        if not self.feature_levels or any(level not in (1, 2, 3, 4) for level in self.feature_levels):
            raise ValueError(f"feature_levels must be a non-empty subset of 1-4, got {self.feature_levels!r}")


@dataclass(frozen=True)
class LossConfig:
    """The loss of :func:`p2m.loss.p2m_loss`. The defaults are Pixel2Mesh's reference loss, the one the
    ``published`` baseline trains with: the forms and weights of the most-used PyTorch port,
    noahcao/Pixel2Mesh (``models/losses/p2m.py`` at commit 78e0f44 for the forms, its
    ``experiments/default/tensorflow.yml`` at commit ffcd022, the config that mirrors the authors'
    TensorFlow training, for the weights), which normalises the authors' TensorFlow factors
    (nywang16/Pixel2Mesh ``p2m/losses.py``: chamfer x3000, edge x300, Laplacian x1500, move x100,
    normal x0.5) by the chamfer's 3000. Each default below names its line.

    Stage-1 Laplacian factor: the port multiplies block 1's Laplacian by 0.2 (``lap_const``), the
    authors' TensorFlow code by 0.1 (``p2m/models.py``, ``.1*laplace_loss(...)``). This config follows
    the port, like every other number here, so that the whole reference comes from one implementation
    whose forms this project reproduces term for term; the TensorFlow values are w1_laplacian 0.05,
    normal 0.5/3000 = 1.667e-4 and move 100/3000 = 0.0333.
    """

    # tensorflow.yml:28-31 `chamfer: [1.0, 1.0, 1.0]` (one factor per block)
    w1_chamfer: float = 1.0
    # tensorflow.yml:34 `edge: 0.1`
    w1_edge: float = 0.1
    # tensorflow.yml:35 `laplace: 0.5` x p2m.py:87 `lap_const = [0.2, 1., 1.]` (block 1: 0.2)
    w1_laplacian: float = 0.1
    # tensorflow.yml:37 `normal: 0.00016`
    w1_normal: float = 1.6e-4
    w2_chamfer: float = 1.0  # tensorflow.yml:30
    w2_edge: float = 0.1  # tensorflow.yml:34
    w2_laplacian: float = 0.5  # tensorflow.yml:35 x lap_const[1] = 1
    w2_normal: float = 1.6e-4  # tensorflow.yml:37
    w3_chamfer: float = 1.0  # tensorflow.yml:31
    w3_edge: float = 0.1  # tensorflow.yml:34
    w3_laplacian: float = 0.5  # tensorflow.yml:35 x lap_const[2] = 1
    w3_normal: float = 1.6e-4  # tensorflow.yml:37
    # The move term (not among the 12 searched weights; see search/space.py). p2m.py:65 computes it only
    # `if block_idx > 0` (block 1's input is the fixed template); blocks 2 and 3: tensorflow.yml:36
    # `move: 0.033` x p2m.py:104 `move_loss += lap_const[i] * move` (lap_const 1).
    w1_move: float = 0.0
    w2_move: float = 0.033
    w3_move: float = 0.033
    chamfer_opposite: float = 0.55  # tensorflow.yml:32 `chamfer_opposite: 0.55`, on prediction -> GT
    # 0 = the mesh vertices (Pixel2Mesh, p2m.py:96 measures the chamfer at pred_coord); > 0 = points
    # sampled on the surface (Mesh R-CNN)
    pred_samples1: int = 0
    pred_samples2: int = 0
    pred_samples3: int = 0
    edge_form: str = FORM_P2M  # "p2m": the reference's squared length; "target": deviation from edge_target_length
    edge_target_length: float = 0.0
    # "p2m": change through the block; "smooth": plain smoothness mean |delta|; "smooth_sq": mean |delta|^2
    laplacian_form: str = FORM_P2M
    # "p2m": the reference's edge vs GT normal; "consistency": adjacent-face normals; "vertex": 1 - cos of each
    # vertex normal and the nearest GT point's normal
    normal_form: str = FORM_P2M
    # "static": the weights above; "learned": the three chamfer weights are learned during training as
    # homoscedastic uncertainties (Kendall, Gal and Cipolla 2018; p2m.weighting), starting at w{s}_chamfer, the
    # other terms at their weights
    weighting: str = "static"
    weighting_lr: float = 1e-2  # Adam's learning rate for the learned log-variances (the model's is optim.lr)

    def __post_init__(self):
        _finite(self)
        _non_negative(self, *WEIGHT_KEYS, *FIXED_WEIGHT_KEYS, "chamfer_opposite", "pred_samples1", "pred_samples2",
                      "pred_samples3", "edge_target_length")
        if not any(getattr(self, key) for key in WEIGHT_KEYS):
            raise ValueError(f"{WEIGHT_KEYS[0]}..{WEIGHT_KEYS[-1]}: all loss weights are 0: nothing to train on")
        _choice(self, "edge_form", EDGE_FORMS)
        _choice(self, "laplacian_form", LAPLACIAN_FORMS)
        _choice(self, "normal_form", NORMAL_FORMS)
        _choice(self, "weighting", ("static", "learned"))
        _positive(self, "weighting_lr")
        if self.weighting == "learned":
            for key in ("w1_chamfer", "w2_chamfer", "w3_chamfer"):
                if getattr(self, key) <= 0:
                    raise ValueError(f"{key} must be > 0 with weighting 'learned' (its learned weight starts there), "
                                     f"got {getattr(self, key)}")

    def weight(self, stage: int, term: str) -> float:
        return getattr(self, weight_key(stage, term))

    def pred_samples(self, stage: int) -> int:
        return getattr(self, pred_samples_field(stage))


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-5  # Adam, as the P2M PyTorch port (1e-4 / 3e-5 in its configs)
    weight_decay: float = 1e-6
    batch_size: int = 8
    max_epochs: int = 50
    steps_per_epoch: int = 0  # 0 = one pass over the training split
    grad_clip_norm: float = 0.0  # 0 = no clipping
    warmup_steps: int = 0  # linear learning-rate warm-up over the first steps (0 = none)
    # after warm-up: "constant"; "cosine" decay to 5% at max_epochs; "wsd" (warmup-stable-decay): constant,
    # then a linear decay to 5% over the last lr_decay_fraction of the run
    lr_schedule: str = "constant"
    lr_decay_fraction: float = 0.2
    # > 0: validate (and save for evaluation) an exponential average of the weights over about this many epochs
    ema_epochs: float = 0.0
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)

    def __post_init__(self):
        _finite(self)
        _positive(self, "lr", "batch_size", "max_epochs", "lr_decay_fraction")
        _non_negative(self, "weight_decay", "steps_per_epoch", "grad_clip_norm", "warmup_steps", "ema_epochs")
        _choice(self, "lr_schedule", ("constant", "cosine", "wsd"))
        if self.lr_decay_fraction > 1:
            raise ValueError(f"lr_decay_fraction must be <= 1, got {self.lr_decay_fraction}")


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    profile: str = "paper"

    def __post_init__(self):
        _choice(self, "profile", PROFILES)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, object]:
        """``{"section.field": value}`` for every leaf, e.g. for a results-table row."""
        return flatten(self.to_dict())


def profile_config(name: str) -> TrainConfig:
    """The configuration of a size profile.

    - ``tiny``: tests; 16 epochs of 6 steps of 4 samples, each a few seconds on a CPU.
    - ``cpu``: small searches on 2 cores (about 1,000 samples per epoch in about a minute).
    - ``paper``: the published size, for GPUs.

    The two search profiles train at a constant learning rate after warm-up and validate an average of the
    weights over the last epoch: measured on a FIFO search (``benchmarks/study_fidelity.py``), that makes the
    ranking at epoch 2 of 6 agree with the last epoch's (Spearman 0.75, 95% interval [0.53, 0.86]), where a
    cosine decay over the trial's horizon left every epoch before the last uninformative.
    """
    if name == "tiny":
        return TrainConfig(profile="tiny", data=DataConfig(gt_samples=1000, image_size=64),
                           model=ModelConfig(hidden_dim=32, layers_per_block=2),
                           optim=OptimConfig(lr=3e-4, batch_size=4, max_epochs=16, steps_per_epoch=6, warmup_steps=10,
                                             lr_schedule="constant", ema_epochs=1.0))
    if name == "cpu":
        return TrainConfig(profile="cpu", data=DataConfig(gt_samples=2000, image_size=96),
                           model=ModelConfig(hidden_dim=64, layers_per_block=4),
                           optim=OptimConfig(lr=3e-4, batch_size=8, max_epochs=10, warmup_steps=20,
                                             lr_schedule="constant", ema_epochs=1.0))
    if name == "paper":
        return TrainConfig(profile="paper")
    raise ValueError(f"profile must be one of {PROFILES}, got {name!r}")


def from_dict(data: dict, base: TrainConfig | None = None, source: str = "config") -> TrainConfig:
    """Apply a nested mapping (as in a YAML file) on top of ``base`` (the profile it names, or paper).

    Raises:
        ValueError: naming ``source`` and the key, for an unknown key or a value of the wrong type.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    if base is None:
        base = profile_config(str(data.get("profile", "paper")))
    updates = {}
    sections = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for key, value in data.items():
        if key not in sections:
            raise ValueError(f"{source}: unknown key {key!r} (known: {', '.join(sections)})")
        current = getattr(base, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"{source}: {key} must be a mapping, got {type(value).__name__}")
            updates[key] = _replace_section(current, value, f"{source}: {key}")
        else:
            updates[key] = coerce(value, type(current), f"{source}: {key}")
    try:
        return dataclasses.replace(base, **updates)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def load_config(path: str | os.PathLike, base: TrainConfig | None = None) -> TrainConfig:
    """Read a YAML config file (see :func:`from_dict`)."""
    return from_dict(read_yaml(path, "config file"), base, source=str(path))


def read_yaml(path: str | os.PathLike, what: str = "file") -> dict:
    """A YAML file's top-level value ({} when empty), or a one-line ValueError naming the file; read with the
    limits of :func:`p2m.yamlio.read_yaml` (at most 1 MiB, 32 levels deep, 100 aliases)."""
    return yamlio.read_yaml(path, what)


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``section.field=value`` strings, then convert each to its field's type.

    A string field (a path, a name, a choice) takes the text after ``=`` literally, so ``data.root=/d #1`` is
    the directory ``/d #1``, not ``/d`` and a YAML comment; any other value is parsed as YAML.

    Raises:
        ValueError: naming the key, for a malformed item, an unknown key, a value that is not valid YAML or
            not of the field's type, or a key below a field that is not a section.
    """
    nested: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like section.field=value")
        key = key.strip().lstrip("-")
        parts = key.split(".")
        node, target = nested, cfg
        for depth, part in enumerate(parts[:-1]):
            child = getattr(target, part, None) if target is not None else None
            if target is not None and hasattr(target, part) and not dataclasses.is_dataclass(child):
                raise ValueError(f"override {key}: {'.'.join(parts[:depth + 1])} is a value, not a section")
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {key}: {'.'.join(parts[:depth + 1])} was set to a value above")
            target = child
        if isinstance(node.get(parts[-1]), dict):
            raise ValueError(f"override {key}: a section takes section.field=value, not a value")
        hint = _field_hint(target, parts[-1])
        node[parts[-1]] = raw if hint is str else yamlio.parse_yaml(raw, f"override {key}")
    return from_dict(nested, base=cfg, source="override")


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (atomically)."""
    data = cfg.to_dict()
    atomic_write_bytes(path, yaml.safe_dump(to_plain(data), sort_keys=False).encode())


def _replace_section(section, values: dict, where: str):
    fields = {f.name: f for f in dataclasses.fields(section)}
    hints = typing.get_type_hints(type(section))
    updates = {}
    for key, value in values.items():
        if key not in fields:
            raise ValueError(f"{where}.{key}: unknown key (known: {', '.join(fields)})")
        updates[key] = coerce(value, hints[key], f"{where}.{key}")
    try:
        return dataclasses.replace(section, **updates)
    except ValueError as exc:
        raise ValueError(f"{where}.{exc}") from None  # section messages start with the field name


def _field_hint(section, name: str):
    """The type of ``section``'s field ``name`` (None when it is not a dataclass field)."""
    if not dataclasses.is_dataclass(section) or name not in {f.name for f in dataclasses.fields(section)}:
        return None
    return typing.get_type_hints(type(section))[name]


def _finite(obj) -> None:
    """Every float field (and float in a tuple field) of a config section is finite."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{f.name} must be finite, got {v!r}")


def _positive(obj, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ValueError(f"{name} must be > 0, got {getattr(obj, name)!r}")


def _non_negative(obj, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(obj, name)!r}")


def _choice(obj, name: str, choices: tuple[str, ...]) -> None:
    if getattr(obj, name) not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {getattr(obj, name)!r}")
