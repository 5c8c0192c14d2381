"""``deepshrink evaluate`` as one call: the test accuracy of a model file (or ``hf:DIR``), on the
data set it records (normalised with its own statistics) or on another of the same image shape;
with ``reference``, its fidelity to the original model on the same test inputs
(:mod:`deepshrink.fidelity`: cosine of outputs, top-1 agreement and KL of logits).

Text data (``text:FILE``) has no labels: its accuracy is not computed, and asking for it without
a reference is one error saying what to measure instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ConfigError
from ..fidelity import Fidelity, fidelity, output_kind
from ..io import load_teacher
from ..train import evaluate
from .inputs import open_model_and_data

__all__ = ["EvaluateRun", "evaluate_file"]


@dataclass
class EvaluateRun:
    accuracy: float | None              # on the test split, in [0, 1]; None for unlabelled data
    data: str                           # the data spec evaluated on
    images: int                         # test samples (images, or sentences)
    labelled: bool = True
    fidelity: Fidelity | None = None    # agreement with ``reference`` on the same test samples
    reference: str | None = None


def evaluate_file(src: str | os.PathLike, *, data: str | None = None, arch: str | None = None,
                  trust_code: bool = False, reference: str | os.PathLike | None = None,
                  seq_len: int | None = None, tokenizer: str | os.PathLike | None = None, model_kwargs: dict | None = None) -> EvaluateRun:
    """Evaluate ``src`` on the test split of its data: accuracy when the data is labelled, and,
    with ``reference`` (a model file or ``hf:DIR``: the model before compression), fidelity to it.
    ``arch``/``trust_code`` apply to both models; ``seq_len``/``tokenizer`` to text models."""
    model, info, ds = open_model_and_data(src, data, arch, trust_code, seq_len=seq_len, tokenizer=tokenizer, model_kwargs=model_kwargs,
                                          need_labels=False)
    if not ds.labelled and reference is None:
        raise ConfigError(f"{ds.name} has no labels, so an accuracy would mean nothing; measure agreement with "
                          "the original model instead: --reference ORIGINAL (Python: reference=...)")
    accuracy = evaluate(model, ds.test) if ds.labelled else None
    fid = None
    if reference is not None:
        ref = load_teacher(reference, ds, arch=arch, trust_code=trust_code)
        fid = fidelity(model, ref, ds.test.x, kind=output_kind(model))
    return EvaluateRun(accuracy, ds.name, len(ds.test), ds.labelled, fid,
                       os.fspath(reference) if reference is not None else None)
