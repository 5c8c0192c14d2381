"""Was a model trained on the validation images a command is about to choose on?

Every choice (a sensitivity scan, an accuracy budget, a threshold) is made on the validation split
that :func:`deepshrink.data.with_validation` carves from the training split: the first ``k`` images
of a permutation of the ``n`` training images seeded with ``VAL_SEED``. A model trained on those
images scores higher on them than on unseen ones, so its "dense" validation accuracy is inflated
and every drop measured against it is too large.

``deepshrink train`` records what it held out in its history entry::

    {"op": "train", ..., "held_out": {"val_size": k, "seed": VAL_SEED, "of_train": n}}

(``val_size`` 0: it trained on every training image). A later split of ``j`` images is held out
when it is carved from the same ``n`` images with the same seed and ``j <= k``: both are prefixes
of one permutation, so the smaller one lies inside the larger.

The record is untrusted input: anything malformed reads as "not held out".
"""

from __future__ import annotations

import sys

from .data import VAL_SEED, Dataset
from .errors import ConfigError

__all__ = ["HELD_OUT", "TRAINED_ON", "UNKNOWN", "OTHER_DATA", "held_out_record", "training_overlap",
           "overlap_warning", "warn_if_trained_on"]

HELD_OUT = "held out"       # the model never saw these validation images
TRAINED_ON = "trained on"   # it did (no hold-out recorded, --val-size 0, or another split)
UNKNOWN = "unknown"         # the file records no training: nobody can tell
OTHER_DATA = "other data"   # it was trained on another data set: not this question


def held_out_record(ds: Dataset, seed: int = VAL_SEED) -> dict:
    """What a training run on ``ds.train`` held out: ``{"val_size": k, "seed": seed, "of_train": n}``,
    ``k`` = 0 when ``ds`` has no validation split; ``n`` counts the training images before the carve."""
    k = 0 if ds.val is None else len(ds.val)
    return {"val_size": k, "seed": seed, "of_train": len(ds.train) + k}


def _train_entry(history) -> dict | None:
    """The first ``train`` entry of a history list, else None."""
    if not isinstance(history, list):
        return None
    return next((h for h in history if isinstance(h, dict) and h.get("op") == "train"), None)


def _whole(v) -> bool:
    return type(v) is int and v >= 0


def training_overlap(history, data_spec: str | None, ds: Dataset, seed: int = VAL_SEED) -> str:
    """Whether the model whose file records ``history`` and ``data_spec`` was trained on ``ds.val``
    (carved with ``seed``): one of :data:`HELD_OUT`, :data:`TRAINED_ON`, :data:`UNKNOWN`,
    :data:`OTHER_DATA`. Pure: reads the record and the split's sizes, nothing else."""
    if ds.val is None:
        raise ConfigError(f"{ds.name}: no validation split; carve one with with_validation first")
    entry = _train_entry(history)
    if entry is None or data_spec is None:
        return UNKNOWN
    if data_spec != ds.name:
        return OTHER_DATA
    held = entry.get("held_out")
    if not isinstance(held, dict) or not all(_whole(held.get(k)) for k in ("val_size", "seed", "of_train")):
        return TRAINED_ON                   # trained before hold-outs were recorded: on every image
    n = len(ds.train) + len(ds.val)
    if held["val_size"] > 0 and held["seed"] == seed and held["of_train"] == n and len(ds.val) <= held["val_size"]:
        return HELD_OUT
    return TRAINED_ON


def overlap_warning(src, history, data_spec: str | None, ds: Dataset) -> str | None:
    """The one warning line for :func:`training_overlap`'s answer, or None when there is nothing to
    say (held out, trained on another data set, or unlabelled data, where no accuracy is chosen on)."""
    if not ds.labelled:
        return None
    verdict = training_overlap(history, data_spec, ds)
    k = len(ds.val)
    where = f"the {k:,} validation images these choices are made on"
    if verdict == UNKNOWN:
        return (f"deepshrink: warning: {src}: records no training on this data set, so whether it was trained on "
                f"{where} is unknown (if it was, its validation accuracy is inflated and every drop measured "
                "against it too large)")
    if verdict != TRAINED_ON:
        return None
    held = (_train_entry(history) or {}).get("held_out")
    why = ""
    if isinstance(held, dict) and held.get("val_size"):
        why = (f"; it held out another split ({held.get('val_size')} of {held.get('of_train')} images, "
               f"seed {held.get('seed')})")
    return (f"deepshrink: warning: {src}: trained on {where}{why} (its validation accuracy is inflated; "
            "retrain it with `deepshrink train`, which holds them out)")


def warn_if_trained_on(src, info, ds: Dataset) -> None:
    """Print :func:`overlap_warning` for the model file ``src`` (its ``ModelInfo`` ``info``) on stderr."""
    line = overlap_warning(src, info.history, info.data, ds)
    if line:
        print(line, file=sys.stderr, flush=True)
