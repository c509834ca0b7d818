"""One codec for config values, used by every reader of a config: p2m's training config, a search's YAML and the
settings an experiment recorded. Standard library only, so that ``results`` may use it too.

- :func:`coerce`: a value read from YAML, a table or the command line, checked against a field's type hint;
- :func:`flatten` and :func:`unflatten`: ``{"loss": {"w1_edge": 1.0}}`` <-> ``{"loss.w1_edge": 1.0}`` (a config's
  sections and fields as the keys a search samples and the results tables' ``config.`` columns);
- :func:`to_plain`: containers of plain Python values, for YAML, JSON and Parquet.
"""
from __future__ import annotations

import typing


def coerce(value, hint, where: str):
    """``value`` as the type ``hint`` says: an int, a float (an int or a number written as text is taken), a bool, a
    str, a tuple of one of them (from a list), or a dict or list as is; any other hint passes ``value`` through.

    Raises:
        ValueError: ``"<where>: expected ..., got <value>"``.
    """
    origin = typing.get_origin(hint) or hint
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return tuple(coerce(v, typing.get_args(hint)[0], where) for v in value) if typing.get_args(hint) else tuple(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    if origin in (dict, list):
        if not isinstance(value, origin):
            raise ValueError(f"{where}: expected a {'mapping' if origin is dict else 'list'}, got {value!r}")
        return value
    return value


def flatten(nested: dict, prefix: str = "") -> dict:
    """``{"section": {"field": v}}`` as ``{"section.field": v}`` (every leaf that is not a dict)."""
    out = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def unflatten(flat: dict) -> dict:
    """``{"section.field": v}`` as ``{"section": {"field": v}}``.

    Raises:
        ValueError: naming a key that is both a value and a section (``a`` and ``a.b``).
    """
    nested: dict = {}
    for key, value in flat.items():
        *sections, field = key.split(".")
        node = nested
        for depth, part in enumerate(sections):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{key}: {'.'.join(sections[:depth + 1])} is a value, not a section")
        if isinstance(node.get(field), dict):
            raise ValueError(f"{key}: a section, not a value")
        node[field] = value
    return nested


def to_plain(value):
    """Dicts, lists and tuples of plain values as dicts and lists of plain Python values (a NumPy scalar as its
    number, a NumPy array as a list), for YAML, JSON and Parquet."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if type(value).__module__ == "numpy":
        return to_plain(value.tolist())  # an array as nested lists, a scalar as its Python value
    return value


__all__ = ["coerce", "flatten", "to_plain", "unflatten"]
