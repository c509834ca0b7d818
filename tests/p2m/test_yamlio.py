"""p2m.yamlio: YAML read with size, depth and alias limits."""
import time

import pytest

from p2m.yamlio import MAX_ALIASES, MAX_DEPTH, parse_yaml, read_yaml


def test_plain_documents_and_a_few_aliases_read_as_safe_load_reads_them(tmp_path):
    assert parse_yaml("a: &x [1, 2]\nb: *x\nc: {d: [1, {e: 2}]}", "s") == {"a": [1, 2], "b": [1, 2],
                                                                        "c": {"d": [1, {"e": 2}]}}
    assert parse_yaml("", "s") is None and parse_yaml("~", "s") is None and parse_yaml("1e-4", "s") == "1e-4"
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml(tmp_path / "empty.yaml") == {}


def test_alias_bomb_is_refused_before_it_expands():
    lines, prev = ["a: &a [" + ", ".join(['"lol"'] * 9) + "]"], "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
        prev = name
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"^bomb.yaml: YAML expands to more than \d+ nodes"):
        parse_yaml("\n".join(lines), "bomb.yaml")
    assert time.perf_counter() - start < 1.0


def test_too_many_aliases_too_deep_too_big_and_broken_are_one_line_errors(tmp_path):
    many = "x: &a 1\n" + "".join(f"k{i}: *a\n" for i in range(MAX_ALIASES + 1))
    for text, message in ((many, f"more than {MAX_ALIASES} YAML aliases"),
                          ("[" * 5000, f"YAML nested more than {MAX_DEPTH} levels deep"),
                          ("a: [1,", "not valid YAML"), ("a: !!python/object:os.system {}", "not valid YAML"),
                          (b"a: \xff", "not UTF-8 text")):
        with pytest.raises(ValueError, match=f"^f.yaml: {message}") as err:
            parse_yaml(text, "f.yaml")
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="f.yaml: 11 bytes, more than the 10"):
        parse_yaml("a: 1234567\n", "f.yaml", max_bytes=10)
    with pytest.raises(ValueError, match="missing.yaml: config not found"):
        read_yaml(tmp_path / "missing.yaml", "config")
    with pytest.raises(ValueError, match=f"{tmp_path}: config is not a regular file"):
        read_yaml(tmp_path, "config")
