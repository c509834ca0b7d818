"""The learning-curve picture tells every baseline apart."""
from results.analysis.plots import baseline_styles


def _look(style):
    return style["color"], str(style["ls"]), style["marker"]


def test_every_baseline_looks_different_and_the_same_in_every_picture():
    names = [f"b{i}" for i in range(84)]  # 6 colours, 4 dashes, 7 markers: a look repeats after lcm(6, 4, 7) = 84
    styles = baseline_styles(names)
    assert len({_look(s) for s in styles.values()}) == len(names)
    assert baseline_styles(reversed(names + names)) == styles  # by name, not by order of appearance
    searched = {"0.55", "tab:blue", "tab:red"}  # stopped, reached max_t, the best
    assert not {s["color"] for s in styles.values()} & searched


def test_two_baselines_differ_in_colour_dashes_and_marker():
    a, b = baseline_styles(["published", "seed"]).values()
    assert all(x != y for x, y in zip(_look(a), _look(b)))
