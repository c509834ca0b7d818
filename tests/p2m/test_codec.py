"""p2m.codec, the one codec of config values: against values written out by hand."""
import numpy as np
import pytest

from p2m.codec import coerce, flatten, to_plain, unflatten


@pytest.mark.parametrize("value, hint, expected", [
    (3, int, 3), (3, float, 3.0), ("1e-4", float, 1e-4), (True, bool, True), ("a", str, "a"),
    ([1, 2], tuple[float, ...], (1.0, 2.0)), ([], tuple[int, ...], ()), ({"a": 1}, dict, {"a": 1}),
    (["x"], list, ["x"]), (None, object, None),
])
def test_coerce_takes_what_the_hint_allows(value, hint, expected):
    out = coerce(value, hint, "k")
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("value, hint, message", [
    (True, int, "k: expected an integer, got True"), (1.5, int, "k: expected an integer, got 1.5"),
    (False, float, "k: expected a number, got False"), ("many", float, "k: expected a number, got 'many'"),
    ("yes", bool, "k: expected true or false, got 'yes'"), (1, str, "k: expected a string, got 1"),
    ("1, 2", tuple[int, ...], "k: expected a list, got '1, 2'"), ([1, "x"], tuple[int, ...], "k: expected an integer"),
    ([1], dict, "k: expected a mapping, got [1]"), ({}, list, "k: expected a list, got {}"),
])
def test_coerce_refuses_in_one_line_naming_the_key(value, hint, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace("[", r"\[")):
        coerce(value, hint, "k")


def test_flatten_and_unflatten_are_inverse():
    nested = {"loss": {"w1_edge": 0.1, "edge_form": "p2m"}, "data": {"gt_samples": 1000}, "seed": 0}
    flat = {"loss.w1_edge": 0.1, "loss.edge_form": "p2m", "data.gt_samples": 1000, "seed": 0}
    assert flatten(nested) == flat and unflatten(flat) == nested
    assert flatten({"a": {"b": {"c": 1}}}) == {"a.b.c": 1} and unflatten({"a.b.c": 1}) == {"a": {"b": {"c": 1}}}
    with pytest.raises(ValueError, match="a.b: a is a value, not a section"):
        unflatten({"a": 1, "a.b": 2})
    with pytest.raises(ValueError, match="a: a section, not a value"):
        unflatten({"a.b": 2, "a": 1})


def test_to_plain_gives_python_values():
    value = {"t": (1, (2, 3)), "n": np.float32(0.5), "i": np.int64(7), "a": np.arange(3), "s": "x", "l": [np.bool_(True)]}
    out = to_plain(value)
    assert out == {"t": [1, [2, 3]], "n": 0.5, "i": 7, "a": [0, 1, 2], "s": "x", "l": [True]}
    assert type(out["n"]) is float and type(out["i"]) is int and type(out["l"][0]) is bool
