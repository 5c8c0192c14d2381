"""The competition score of a compressed model, as the write-up in ``shared/seeds/`` defines it
(ZTE "deep learning model optimisation and acceleration", YaHei's defence slides, first page):

    score = ((M - m) / M x 20 + (S - s) / s x 80) x A(z) x B(s)

with M, m the original's and the compressed model's peak inference memory, S, s their sizes,
z the compressed model's accuracy, A an accuracy gate and B a size gate (step functions).

**The size term divides by s, the compressed size, not by S**, exactly as the write-up writes it
(the memory term divides by the original M). So the size term is the compression ratio minus
one, times 80: unbounded as s shrinks (10x smaller: 720 points; 50x: 3,920), while the memory
term is at most 20. It is implemented as written, not "corrected"; :class:`Score` says so.

The write-up's gates are absolute thresholds for its own task (:meth:`Gates.writeup`):

    A(z) = 1 if z >= 0.97, 0.9 if 0.965 <= z < 0.97, else 0
    B(s) = 1 if s <= 40 MB, 0.9 if 40 MB < s <= 50 MB, 0.8 if 50 MB < s <= 63 MB, else 0

Here they are parameters, and the default (:meth:`Gates.relative`) keeps their shape relative
to the baseline, since the write-up states neither its baseline accuracy nor its model's size:

* accuracy: full credit at no more than 0.5 pp below the baseline (the project's default
  ``--max-drop``), 0.9 down to 1.0 pp below (the write-up's band, 0.97 to 0.965, is 0.5 pp
  wide), 0 further down;
* size: the write-up's last threshold, 63 MB, read as the original's size (a model no smaller
  than it scores 0), so full credit at s <= 40/63 of S (63.5%), 0.9 up to 50/63 (79.4%), 0.8 up
  to S itself, 0 above. "MB" is read as 2^20 bytes in :meth:`Gates.writeup` (the write-up does
  not say).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction

from .errors import ConfigError

__all__ = ["Gates", "Score", "score", "MEMORY_WEIGHT", "SIZE_WEIGHT", "SIZE_TERM_MEANS"]

MEMORY_WEIGHT, SIZE_WEIGHT = 20, 80
MB = 2 ** 20
SIZE_TERM_MEANS = "(S - s) / s x 80: divided by the compressed size s, as the write-up writes it (not by S)"
DEFAULT_DROPS_PP = (0.5, 1.0)              # accuracy gate steps, percentage points below the baseline
DEFAULT_ACCURACY_FACTORS = (1.0, 0.9)
DEFAULT_SIZE_FRACTIONS = (Fraction(40, 63), Fraction(50, 63), Fraction(1))   # of the original size
DEFAULT_SIZE_FACTORS = (1.0, 0.9, 0.8)


@dataclass(frozen=True)
class Gates:
    """A(z): ``accuracy`` is ((lowest z, factor), ...), highest threshold first; the first step
    with z >= its threshold gives the factor, 0 below them all. B(s): ``size`` is ((largest s in
    bytes, factor), ...), smallest first; the first step with s <= its threshold gives the factor,
    0 above them all."""

    accuracy: tuple[tuple[float, float], ...]
    size: tuple[tuple[float, float], ...]

    def __post_init__(self):
        for name, steps, descending in (("accuracy", self.accuracy, True), ("size", self.size, False)):
            if not steps:
                raise ConfigError(f"score gates: the {name} gate needs at least one step")
            limits = [t for t, _ in steps]
            if limits != sorted(limits, reverse=descending) or len(set(limits)) != len(limits):
                raise ConfigError(f"score gates: {name} thresholds must be strictly "
                                  f"{'decreasing' if descending else 'increasing'}, got {limits}")
            if any(not 0 <= f <= 1 for _, f in steps):
                raise ConfigError(f"score gates: {name} factors must lie in [0, 1], got {[f for _, f in steps]}")

    def a(self, z: float) -> float:
        """The accuracy gate A(z)."""
        return next((f for t, f in self.accuracy if z >= t), 0.0)

    def b(self, s: float) -> float:
        """The size gate B(s), ``s`` in bytes."""
        return next((f for t, f in self.size if s <= t), 0.0)

    @classmethod
    def writeup(cls) -> "Gates":
        """The write-up's own absolute gates (its task: 97% accuracy, 40/50/63 MB)."""
        return cls(accuracy=((0.97, 1.0), (0.965, 0.9)),
                   size=((40 * MB, 1.0), (50 * MB, 0.9), (63 * MB, 0.8)))

    @classmethod
    def relative(cls, baseline_accuracy: float, original_bytes: float, *, drops_pp=DEFAULT_DROPS_PP,
                 accuracy_factors=DEFAULT_ACCURACY_FACTORS, size_fractions=DEFAULT_SIZE_FRACTIONS,
                 size_factors=DEFAULT_SIZE_FACTORS) -> "Gates":
        """The write-up's shape around a baseline (see the module docstring for the defaults):
        A steps at ``baseline_accuracy - drop / 100`` for each drop in pp, B steps at each
        fraction of ``original_bytes``."""
        _fraction(baseline_accuracy, "baseline accuracy")
        if not original_bytes > 0:
            raise ConfigError(f"score gates: the original size must be positive, got {original_bytes}")
        if len(drops_pp) != len(accuracy_factors) or len(size_fractions) != len(size_factors):
            raise ConfigError("score gates: one factor per threshold")
        # rounded to 1e-12 so that e.g. 0.975 - 0.5 pp is exactly 0.97 (no float crumbs at an edge)
        accuracy = tuple((round(baseline_accuracy - d / 100, 12), f) for d, f in zip(drops_pp, accuracy_factors))
        size = tuple((float(Fraction(fr) * Fraction(original_bytes)), f) for fr, f in zip(size_fractions, size_factors))
        return cls(accuracy=accuracy, size=size)


@dataclass(frozen=True)
class Score:
    """The score and its parts; ``score == (memory_term + size_term) * accuracy_gate * size_gate``."""

    score: float
    memory_term: float          # (M - m) / M x 20
    size_term: float            # (S - s) / s x 80 - divided by s, as written
    accuracy_gate: float        # A(z)
    size_gate: float            # B(s)
    original_memory: float      # M
    memory: float               # m
    original_size: float        # S
    size: float                 # s
    accuracy: float             # z

    def to_dict(self) -> dict:
        return {**asdict(self), "size_term_means": SIZE_TERM_MEANS}

    def summary(self) -> str:
        return (f"score {self.score:,.2f} = (memory {self.memory_term:,.2f} + size {self.size_term:,.2f}) "
                f"x A {self.accuracy_gate:g} x B {self.size_gate:g}; size term {SIZE_TERM_MEANS}")


def _fraction(z: float, what: str) -> None:
    if not 0 <= z <= 1:
        raise ConfigError(f"score: {what} must be a fraction in [0, 1], got {z} (a percentage? divide by 100)")


def score(original_memory: float, memory: float, original_size: float, size: float, accuracy: float,
          gates: Gates) -> Score:
    """The write-up's score of a compressed model (memory and sizes in bytes, ``accuracy`` in [0, 1]).
    ``gates``: :meth:`Gates.relative` around the baseline, or :meth:`Gates.writeup`."""
    for value, what in ((original_memory, "original peak memory M"), (original_size, "original size S"),
                        (size, "compressed size s")):
        if not value > 0:
            raise ConfigError(f"score: {what} must be positive, got {value}")
    if memory < 0:
        raise ConfigError(f"score: peak memory m must not be negative, got {memory}")
    _fraction(accuracy, "accuracy z")
    memory_term = (original_memory - memory) / original_memory * MEMORY_WEIGHT
    size_term = (original_size - size) / size * SIZE_WEIGHT
    a, b = gates.a(accuracy), gates.b(size)
    return Score(score=(memory_term + size_term) * a * b, memory_term=memory_term, size_term=size_term,
                 accuracy_gate=a, size_gate=b, original_memory=original_memory, memory=memory,
                 original_size=original_size, size=size, accuracy=accuracy)
