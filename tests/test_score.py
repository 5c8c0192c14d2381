"""The competition score (deepshrink.score) against hand-computed values: the formula with its
size term divided by s (not S), and every step edge of both gates (>= and <, <= and >)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from deepshrink.errors import ConfigError
from deepshrink.score import SIZE_TERM_MEANS, Gates, score

MB = 2 ** 20
OPEN = Gates(accuracy=((0.0, 1.0),), size=((float("inf"), 1.0),))   # both gates always 1


def test_formula_by_hand_and_the_size_term_divides_by_s():
    # M = 100, m = 60: (40 / 100) x 20 = 8;  S = 1000, s = 250: (750 / 250) x 80 = 240 (750 / 1000 x 80 would be 60)
    r = score(100, 60, 1000, 250, 0.99, OPEN)
    assert r.memory_term == pytest.approx(8.0)
    assert r.size_term == pytest.approx(240.0) and r.size_term != pytest.approx(60.0)
    assert (r.accuracy_gate, r.size_gate) == (1.0, 1.0)
    assert r.score == pytest.approx(248.0)
    assert "divided by the compressed size s" in SIZE_TERM_MEANS and "not by S" in r.summary()
    assert r.to_dict()["size_term_means"] == SIZE_TERM_MEANS


def test_gates_multiply_the_sum():
    gates = Gates(accuracy=((0.9, 1.0), (0.8, 0.9)), size=((500, 1.0), (800, 0.8)))
    r = score(200, 150, 1000, 600, 0.85, gates)   # memory 5, size 400/600 x 80 = 53.33..., A 0.9, B 0.8
    assert (r.accuracy_gate, r.size_gate) == (0.9, 0.8)
    assert r.score == pytest.approx((5 + 400 / 600 * 80) * 0.9 * 0.8)
    assert score(200, 150, 1000, 600, 0.79, gates).score == 0.0       # A = 0
    assert score(200, 150, 1000, 801, 0.95, gates).score == 0.0       # B = 0


def test_a_larger_model_or_more_memory_gives_negative_terms():
    r = score(100, 120, 1000, 2000, 1.0, OPEN)
    assert r.memory_term == pytest.approx(-4.0) and r.size_term == pytest.approx(-40.0)


@pytest.mark.parametrize("z, factor", [(1.0, 1.0), (0.97, 1.0), (0.9699999, 0.9), (0.965, 0.9),
                                       (0.9649999, 0.0), (0.0, 0.0)])
def test_writeup_accuracy_gate_edges(z, factor):
    assert Gates.writeup().a(z) == factor        # 1 at z >= 0.97; 0.9 at 0.965 <= z < 0.97; else 0


@pytest.mark.parametrize("s, factor", [(1, 1.0), (40 * MB, 1.0), (40 * MB + 1, 0.9), (50 * MB, 0.9),
                                       (50 * MB + 1, 0.8), (63 * MB, 0.8), (63 * MB + 1, 0.0)])
def test_writeup_size_gate_edges(s, factor):
    assert Gates.writeup().b(s) == factor        # 1 at s <= 40 MB; 0.9 up to 50; 0.8 up to 63; else 0


def test_relative_gates_mirror_the_writeup_around_the_baseline():
    g = Gates.relative(0.92, 63 * MB)            # steps at 0.915 / 0.91, and 40 / 50 / 63 MB
    assert [t for t, _ in g.accuracy] == [0.915, 0.91]
    assert [t for t, _ in g.size] == [40 * MB, 50 * MB, 63 * MB]
    assert (g.a(0.92), g.a(0.915), g.a(0.9149999), g.a(0.91), g.a(0.9099999)) == (1.0, 1.0, 0.9, 0.9, 0.0)
    assert (g.b(40 * MB), g.b(40 * MB + 1), g.b(50 * MB), g.b(50 * MB + 1), g.b(63 * MB), g.b(63 * MB + 1)) \
        == (1.0, 0.9, 0.9, 0.8, 0.8, 0.0)
    # the write-up's own numbers, read as a 97.5% baseline of 63 MB, give the write-up's gates
    assert Gates.relative(0.975, 63 * MB) == Gates.writeup()


def test_relative_gates_at_any_original_size():
    g = Gates.relative(0.5, 6300, size_fractions=(Fraction(40, 63), Fraction(1)), size_factors=(1.0, 0.5),
                       drops_pp=(2.0,), accuracy_factors=(1.0,))
    assert g.size == ((4000.0, 1.0), (6300.0, 0.5)) and g.accuracy == ((0.48, 1.0),)
    assert score(10, 10, 6300, 6300, 0.48, g).score == 0.0       # no compression: both terms 0
    assert score(10, 5, 6300, 4000, 0.48, g).score == pytest.approx((10 + 2300 / 4000 * 80) * 1.0 * 1.0)


@pytest.mark.parametrize("kwargs", [
    {"accuracy": ((0.9, 1.0), (0.95, 0.9)), "size": ((1, 1.0),)},     # accuracy steps not decreasing
    {"accuracy": ((0.9, 1.0),), "size": ((2, 1.0), (1, 0.9))},        # size steps not increasing
    {"accuracy": ((0.9, 1.5),), "size": ((1, 1.0),)},                 # a factor above 1
    {"accuracy": (), "size": ((1, 1.0),)},                            # no step
])
def test_bad_gates_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        Gates(**kwargs)


@pytest.mark.parametrize("args", [(0, 1, 10, 5, 0.9), (10, 1, 10, 0, 0.9), (10, 1, 0, 5, 0.9), (10, -1, 10, 5, 0.9),
                                  (10, 1, 10, 5, 92.0)])
def test_bad_inputs_are_config_errors(args):
    with pytest.raises(ConfigError):
        score(*args, OPEN)
    with pytest.raises(ConfigError):
        Gates.relative(92.0, 100)
