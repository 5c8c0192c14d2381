"""Shared by the benchmarks that distil: a baseline checkpoint as teacher, with its logits for
the training split computed once and cached under runs/distill/, named after the checkpoint's
SHA-256 (so every script reuses the same file, and a retrained baseline gets a new one)."""

from __future__ import annotations

import time

import torch

from _results import ROOT, baseline_path

from deepshrink.distill.cache import cached_teacher_logits, file_sha256
from deepshrink.distill import freeze_teacher
from deepshrink.io import load_model
from deepshrink.train import evaluate

__all__ = ["teacher_and_cache", "soft_target_stats"]


def teacher_and_cache(name: str, ds):
    """(teacher, its cached training-set logits, the results entry describing both)."""
    path = baseline_path(name)
    teacher, info = load_model(path)
    sha = file_sha256(path)
    t0 = time.perf_counter()
    cache, loaded = cached_teacher_logits(freeze_teacher(teacher), ds.train,
                                          ROOT / "runs" / "distill" / f"teacher-{sha[:16]}-train.safetensors",
                                          meta={"checkpoint": str(path.relative_to(ROOT)), "sha256": sha})
    cache_s = time.perf_counter() - t0
    acc = evaluate(teacher, ds.test)
    print(f"teacher {name}: test {acc * 100:.2f}%, logits {'loaded' if loaded else 'computed'} "
          f"in {cache_s:.0f} s", flush=True)
    return teacher, cache, {"name": name, "file": str(path.relative_to(ROOT)), "sha256": sha, "accuracy": acc,
                            "cache_seconds": cache_s, "cache_loaded": loaded,
                            "params": sum(p.numel() for p in teacher.parameters()),
                            "soft_targets": soft_target_stats(cache.logits, ds.train.y)}


def soft_target_stats(logits: torch.Tensor, labels: torch.Tensor, temps=(1, 2, 4)) -> dict:
    """The teacher's targets on the training images per temperature: mean probability of the
    true class and mean entropy (nats; uniform over 10 classes = 2.30)."""
    out = {"train_accuracy": (logits.argmax(1) == labels).float().mean().item()}
    for t in temps:
        p = (logits / t).softmax(1)  # (N, classes)
        out[f"T={t}"] = {"p_true": p.gather(1, labels[:, None]).mean().item(),
                         "entropy": -(p * p.clamp_min(1e-12).log()).sum(1).mean().item()}
    return out
