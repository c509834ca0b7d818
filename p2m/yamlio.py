"""YAML read with limits: the one reader of every YAML file and override string the project parses.

``yaml.safe_load`` refuses Python tags but not size: a 50 MB file, a document nested thousands deep (the
composer recurses) or an alias bomb (a "billion laughs": aliases of aliases, shared in memory but expanded by
whatever walks the result) each cost gigabytes or a ``RecursionError`` traceback. This loader refuses each
one before it builds anything: the byte size before parsing, the depth and the alias count while composing.
Standard library and PyYAML only (``results`` reads its settings through it, without torch).
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

MAX_BYTES = 1 << 20  # 1 MiB: a config, a search's settings or a race record is a few kB
MAX_DEPTH = 32  # nested mappings and lists: a config is 2 deep, a search's settings 4
MAX_ALIASES = 100  # anchors are a convenience in a config, used a few times
# nodes the document holds with every alias expanded: a config has about 100. The classic bomb has only 81
# aliases (9 levels of 9) but expands to 9**9 nodes: the alias count alone does not catch it.
MAX_EXPANDED_NODES = 100_000


def read_yaml(path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_BYTES):
    """A local YAML file's top-level value ({} when empty), read with :func:`parse_yaml`'s limits.

    Raises:
        ValueError: one line naming the file, when it is missing, not a regular file, larger than
            ``max_bytes``, not valid YAML, or past a limit.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ValueError(f"{path}: {what} not found") from None
    if not path.is_file():
        raise ValueError(f"{path}: {what} is not a regular file")
    _check_size(size, str(path), max_bytes)
    value = parse_yaml(path.read_bytes(), str(path), max_bytes)
    return {} if value is None else value


def parse_yaml(text: str | bytes, source: str, max_bytes: int = MAX_BYTES):
    """The value of one YAML document (None when empty), with ``source`` (a file or key) named in every error.

    Raises:
        ValueError: one line, for text longer than ``max_bytes``, nested deeper than ``MAX_DEPTH``, with more
            than ``MAX_ALIASES`` aliases, or not valid (safe) YAML.
    """
    _check_size(len(text), source, max_bytes)
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError as exc:
            raise ValueError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    loader = _LimitedLoader(text)
    try:
        value = loader.get_single_data()
    except _LimitError as exc:
        raise ValueError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML ({_first_line(exc)})") from None
    finally:
        loader.dispose()
    return value


class _LimitError(Exception):
    pass


class _LimitedLoader(yaml.SafeLoader):
    """SafeLoader that counts depth, aliases and the expanded size while composing, before any object is
    constructed (an alias composes to its anchor's node, whose expanded size is already known)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._expanded: dict[int, int] = {}  # id(node) -> nodes under it with aliases expanded

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _LimitError(f"more than {MAX_ALIASES} YAML aliases (refused: an alias bomb?)")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _LimitError(f"YAML nested more than {MAX_DEPTH} levels deep")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if id(node) not in self._expanded:
            self._expanded[id(node)] = size = 1 + sum(self._expanded.get(id(child), 1) for child in _children(node))
            if size > MAX_EXPANDED_NODES:
                raise _LimitError(f"YAML expands to more than {MAX_EXPANDED_NODES} nodes through its aliases "
                                  "(refused: an alias bomb?)")
        return node


def _children(node):
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return ()


def _check_size(size: int, source: str, max_bytes: int) -> None:
    if size > max_bytes:
        raise ValueError(f"{source}: {size} bytes, more than the {max_bytes} a YAML file may have")


def _first_line(exc: Exception) -> str:
    lines = str(exc).splitlines()
    return lines[0] if lines else type(exc).__name__
