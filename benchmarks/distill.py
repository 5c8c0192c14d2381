"""Knowledge distillation on Fashion-MNIST: students trained alone against the same students
distilled from a trained teacher (KL, L2 and cosine on logits), same epochs, seeds and batch
order; and fine-tuning after pruning to 95% sparsity with and without a teacher.

    python benchmarks/distill.py [--students lenet300 lenet5-slim lenet5-half] [--seeds 0 1 2]
                                 [--epochs 10] [--losses kl l2 cosine] [--temperature 4] [--alpha 0.9]
                                 [--teacher vgg] [--threads 1] [--no-prune] [--prune-only] [--tables-only]

Students: LeNet-300-100, a slim LeNet-5 (conv 6, conv 16, fc 120: LeCun's 1998 widths) and a
half-width LeNet-5 (conv 10, conv 25, fc 200; 88,745 params against the baseline's 431,080).
Settings (the flags' defaults): the ResNet-20 baseline as teacher (trained without label
smoothing; the VGG baseline was, and distils worse), KL at T=2, alpha=0.5, and one epoch of linear
LR warmup for every student, alone and distilled alike. Without warmup, the distillation
gradients (about T (p_s - p_t) per logit) made the slim LeNet-5, which has no BatchNorm,
collapse at its recipe's LR (T=4, alpha=0.5: every ReLU dead, a constant output, 10%) or land
below the student trained alone; those runs are kept in results/distill_<teacher>_warmup0.json.
Teacher: a baseline checkpoint (checkpoints/baselines/, benchmarks/baselines.py). Students train
without augmentation (alone and distilled alike), so the teacher's logits for the 60,000
training images are computed once and cached in runs/distill/ under the checkpoint's hash.
Pruning: the LeNet-300-100 baseline, global magnitude pruning to 95%, fine-tuned with its own
recipe's LR and weight decay, plain, with the dense model as teacher (PruneConfig.distill),
and (one-shot only) with the big teacher; per seed, all variants share the batch order.
Results of students or parts not run are kept from the previous results file (one file per teacher
and warmup: results/distill.json for the default settings, distill_<teacher>_warmup<W>.json else).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _results import (baseline_path, command, command_from_args, load_baseline, merge_commands, previous,
                      write_result)
from _teachers import teacher_and_cache

from deepshrink import data as data_mod
from deepshrink import models
from deepshrink.distill import DistillConfig, distill
from deepshrink.distill.cache import file_sha256
from deepshrink.models.recipes import recipe
from deepshrink.profile import profile_model
from deepshrink.prune import PruneConfig, prune_, prune_and_finetune, sparsity
from deepshrink.train import TrainConfig, evaluate, fit, seed_everything

STUDENTS = {  # label -> (zoo name, kwargs)
    "lenet300": ("lenet300", {}),
    "lenet5-slim": ("lenet5", {"conv1": 6, "conv2": 16, "fc1": 120}),
    "lenet5-half": ("lenet5", {"conv1": 10, "conv2": 25, "fc1": 200}),  # about half LeNet-5's widths
}
PRUNE_SPARSITY = 0.95
DEFAULT_TEACHER = "resnet20"


def train_student(label: str, method: str, seed: int, epochs: int, ds, teacher, cache, temperature, alpha,
                  augment: bool = False, warmup: float = 1.0) -> dict:
    arch, kw = STUDENTS[label]
    seed_everything(seed)
    model = models.build(arch, **kw)
    cfg = recipe(arch, epochs=epochs, augment=augment, seed=seed, progress=False, verbose=False, eval_every=0,
                 warmup_epochs=warmup)
    t0 = time.perf_counter()
    if method == "alone":
        acc = fit(model, ds, cfg).accuracy
    else:
        res = distill(teacher, model, ds, DistillConfig(loss=method, temperature=temperature, alpha=alpha), cfg,
                      cache=cache)
        acc = res.accuracy
        assert augment or res.cache_misses == 0, "every training image should come from the cache"
    return {"seed": seed, "accuracy": acc, "seconds": time.perf_counter() - t0}


def prune_variants(which, schedule: str, temperature: float, alpha: float) -> dict:
    """{label: PruneConfig extras, or None for the big teacher through distill()}."""
    kd = {"kd_temperature": temperature, "kd_alpha": alpha}
    suffix = "" if (temperature, alpha) == (4.0, 0.9) else f" (T={temperature:g}, alpha={alpha:g})"
    out = {}
    if "plain" in which:
        out["plain fine-tuning"] = {}
    if "dense" in which:
        out["dense model as teacher" + suffix] = {"distill": True, **kd}
    if "big" in which and schedule == "oneshot":
        out["big teacher" + suffix] = None
    return out


def prune_runs(seed: int, epochs: int, ds, teacher, cache, schedules, which, temperature, alpha) -> dict:
    """Per schedule: {variant: run} for the LeNet-300-100 baseline pruned to 95%."""
    out = {}
    for schedule in schedules:
        out[schedule] = {}
        for label, extra in prune_variants(which, schedule, temperature, alpha).items():
            model, _, trained = load_baseline("lenet300")
            pcfg = PruneConfig(sparsity=PRUNE_SPARSITY, rule="magnitude", scope="global", schedule=schedule,
                               epochs=epochs, lr=trained["lr"], weight_decay=trained["weight_decay"],
                               augment=trained["augment"], seed=seed, progress=False, verbose=False,
                               **{"distill": False, **(extra or {})})
            t0 = time.perf_counter()
            if extra is not None:
                r = prune_and_finetune(model, ds, pcfg)
                acc, pruned = r.accuracy_after, r.accuracy_pruned
            else:  # prune_and_finetune's one-shot path, with the big teacher through distill()
                prune_(model, PRUNE_SPARSITY, pcfg.rule, pcfg.scope, seed)
                pruned = evaluate(model, ds.test)
                tcfg = TrainConfig(epochs=epochs, lr=pcfg.lr, weight_decay=pcfg.weight_decay, seed=seed,
                                   batch_size=pcfg.batch_size, augment=pcfg.augment, progress=False,
                                   verbose=False, eval_every=0)
                acc = distill(teacher, model, ds, DistillConfig(temperature=temperature, alpha=alpha), tcfg,
                              cache=cache).accuracy
            out[schedule][label] = {"accuracy": acc, "accuracy_pruned": pruned, "sparsity": sparsity(model),
                                    "seconds": time.perf_counter() - t0}
            print(f"prune {schedule} seed {seed} {label}: {acc * 100:.2f}% (sparsity {sparsity(model) * 100:.2f}%)",
                  flush=True)
    return out


def results_name(teacher: str, warmup: float) -> str:
    """One results file per teacher and warmup: distill.json for the must-show settings."""
    if (teacher, warmup) == (DEFAULT_TEACHER, 1.0):
        return "distill"
    return f"distill_{teacher}_warmup{warmup:g}"


def _alone_runs(label: str, args, key: str) -> list | None:
    """The 'alone' runs of another teacher's results file (``--reuse-alone NAME``: results/NAME.json) when made with
    this student, epochs, seeds and warmup. Training alone does not involve the teacher, and fit
    is bit-reproducible from its config."""
    old = previous(args.reuse_alone).get("students", {}).get(key)
    arch, kw = STUDENTS[label]
    if old and (old["arch"], old["kwargs"], old["epochs"], old["seeds"], old.get("warmup", 0.0)) == (
            arch, kw, args.epochs, args.seeds, args.warmup):
        return old["runs"]["alone"]
    return None


def _commands(part: dict) -> list[str]:
    """The commands that produced a part of the results (older files kept one string)."""
    return list(part.get("commands") or ([part["command"]] if part.get("command") else []))


def _summary(accs: list[float]) -> tuple[float, float]:
    return statistics.mean(accs), (statistics.stdev(accs) if len(accs) > 1 else 0.0)


def table(students: dict, pruning: dict | None) -> list[list]:
    rows = []
    for label, res in students.items():
        base = {r["seed"]: r["accuracy"] for r in res["runs"]["alone"]}
        for method, runs in res["runs"].items():
            accs = [r["accuracy"] for r in runs]
            mean, sd = _summary(accs)
            diffs = [r["accuracy"] - base[r["seed"]] for r in runs if r["seed"] in base]
            better = sum(d > 0 for d in diffs)
            rows.append([label, f"{res['params']:,} params", "trained alone" if method == "alone" else f"KD {method}",
                         f"{mean * 100:.2f}%", f"{sd * 100:.2f}",
                         " / ".join(f"{a * 100:.2f}" for a in accs),
                         "" if method == "alone" else f"{statistics.mean(diffs) * 100:+.2f} ({better}/{len(diffs)})",
                         f"{statistics.mean(r['seconds'] for r in runs):.0f}"])
    for schedule, by_variant in (pruning or {}).get("runs", {}).items():
        base = {r["seed"]: r["accuracy"] for r in by_variant["plain fine-tuning"]}
        for variant, runs in by_variant.items():
            accs = [r["accuracy"] for r in runs]
            mean, sd = _summary(accs)
            diffs = [r["accuracy"] - base[r["seed"]] for r in runs]
            rows.append([f"lenet300 pruned {PRUNE_SPARSITY:.0%} ({schedule})", f"dense {pruning['dense'] * 100:.2f}%",
                         variant, f"{mean * 100:.2f}%", f"{sd * 100:.2f}", " / ".join(f"{a * 100:.2f}" for a in accs),
                         "" if variant == "plain fine-tuning" else
                         f"{statistics.mean(diffs) * 100:+.2f} ({sum(d > 0 for d in diffs)}/{len(diffs)})",
                         f"{statistics.mean(r['seconds'] for r in runs):.0f}"])
    return rows


def train_students(args, ds, teacher, cache, command: str) -> dict:
    """{row name: entry} for each student: alone (or reused, --reuse-alone) and per KD loss, per seed."""
    students = {}
    for label in args.students:
        arch, kw = STUDENTS[label]
        prof = profile_model(models.build(arch, **kw), torch.zeros(1, 1, 28, 28))
        name = label + (", augmented" if args.augment else "")  # its own rows: never merged with the others
        reused = _alone_runs(label, args, name) if args.reuse_alone else None
        runs = {"alone": reused} if reused else {}
        if reused:
            print(f"{label} alone: reused from results/{args.reuse_alone}.json (same epochs, seeds, warmup and "
                  "model)", flush=True)
        for method in ([] if reused else ["alone"]) + args.losses:
            settings = f"T={args.temperature:g}, alpha={args.alpha:g}" if method == "kl" else f"alpha={args.alpha:g}"
            key = method if method == "alone" else f"{method} ({settings})"  # other settings: their own rows
            runs[key] = []
            for seed in args.seeds:
                r = train_student(label, method, seed, args.epochs, ds, teacher, cache, args.temperature, args.alpha,
                                  args.augment, args.warmup)
                runs[key].append(r)
                print(f"{name} {key} seed {seed}: {r['accuracy'] * 100:.2f}% ({r['seconds']:.0f} s)", flush=True)
        students[name] = {"arch": arch, "kwargs": kw, "params": prof.totals["params"], "macs": prof.totals["macs"],
                          "augment": args.augment, "epochs": args.epochs, "seeds": args.seeds, "threads": args.threads,
                          "warmup": args.warmup,
                          "temperature": args.temperature, "alpha": args.alpha, "commands": [command],
                          "alone_reused_from": f"results/{args.reuse_alone}.json" if reused else None,
                          "runs": runs}
    return students


def compare_pruning(args, ds, teacher, cache, command: str) -> dict:
    """The LeNet-300-100 baseline pruned to 95%: every schedule and variant, per seed."""
    dense = evaluate(load_baseline("lenet300")[0], ds.test)
    runs: dict = {}
    for seed in args.seeds:
        for schedule, by_variant in prune_runs(seed, args.prune_epochs, ds, teacher, cache, args.prune_schedules,
                                               args.prune_variants, args.prune_temperature,
                                               args.prune_alpha).items():
            for variant, r in by_variant.items():
                runs.setdefault(schedule, {}).setdefault(variant, []).append({"seed": seed, **r})
    return {"model": "lenet300", "dense": dense, "sparsity": PRUNE_SPARSITY, "epochs": args.prune_epochs,
            "seeds": args.seeds, "threads": args.threads, "commands": [command], "runs": runs}


def load_teacher(args):
    """(data, teacher, its cached training-set logits, its results entry). A table rebuild
    (--tables-only) of results made with this very checkpoint takes the stored entry, which
    describes the runs (cache time, loaded or not), and loads nothing."""
    if args.tables_only:
        stored = previous(results_name(args.teacher, args.warmup)).get("teacher", {})
        if stored.get("sha256") == file_sha256(baseline_path(args.teacher)):
            return None, None, None, stored
    ds = data_mod.load("fashion-mnist")
    return (ds, *teacher_and_cache(args.teacher, ds))


def merge_previous(old: dict, tinfo: dict, students: dict, pruning: dict | None) -> tuple[dict, dict | None]:
    """Merge with the results file as it is now (another part may have run meanwhile), if it
    was made with the same teacher: students, methods, schedules and variants not rerun are kept."""
    if old.get("teacher", {}).get("sha256") != tinfo["sha256"]:
        return students, pruning
    merged = dict(old.get("students", {}))
    for label, res in students.items():
        was = merged.get(label)
        if was and (was["epochs"], was["seeds"]) == (res["epochs"], res["seeds"]):
            res["runs"] = {**was["runs"], **res["runs"]}  # methods not rerun are kept
            res["commands"] = merge_commands(_commands(was), res["commands"])
        merged[label] = res
    was = old.get("pruning")
    if pruning and was and (was["epochs"], was["seeds"]) == (pruning["epochs"], pruning["seeds"]):
        for schedule, by_variant in was["runs"].items():  # variants not rerun are kept
            pruning["runs"][schedule] = {**by_variant, **pruning["runs"].get(schedule, {})}
        pruning["commands"] = merge_commands(_commands(was), pruning["commands"])
    return merged, pruning or was


def notes(args, tinfo: dict, students: dict, pruning: dict | None) -> list[str]:
    out = [
        f"Teacher: {tinfo['name']} ({tinfo['file']}, {tinfo['params']:,} params, test accuracy "
        f"{tinfo['accuracy'] * 100:.2f}%). Its logits for the 60,000 training images were computed once and "
        f"cached (students train without augmentation, so every batch came from the cache; not for "
        f"', augmented' rows).",
        "Teacher targets on the training images (train accuracy "
        f"{tinfo['soft_targets']['train_accuracy'] * 100:.2f}%): " + "; ".join(
            f"{t}: true class {v['p_true']:.2f}, entropy {v['entropy']:.2f} nats"
            for t, v in tinfo["soft_targets"].items() if t.startswith("T=")) + " (uniform: 2.30).",
        "Each student: its zoo recipe's LR and weight decay (deepshrink/models/recipes.py), cosine schedule "
        f"after {args.warmup:g} epoch(s) of linear LR warmup, batch 128, no augmentation (students named ', augmented': the recipe's random shifts and flips, "
        "the teacher run on every batch); the same epochs, seeds and batch order alone and distilled. KD: "
        "alpha * T^2 * KL + (1 - alpha) * CE; L2 and cosine replace the KL term (alpha the same). "
        "Accuracy: the 10,000 test images after the last epoch.",
        "mean and std (sample, over seeds) in pp; 'vs alone' is the mean per-seed difference, with the number "
        "of seeds where the distilled student beat the one trained alone.",
        "Pruning: the LeNet-300-100 baseline pruned to 95% (global magnitude), fine-tuned with its recipe's LR "
        "and weight decay; 'vs alone' compares with plain fine-tuning at the same seed. 'dense model as "
        f"teacher' is PruneConfig(distill=True), KD T={args.prune_temperature:g}, alpha={args.prune_alpha:g} "
        "from the unpruned copy (rows naming other settings: those); 'big teacher' is "
        "the same one-shot path through distill() with the teacher above.",
        "Seconds: wall time per run on a machine shared with other jobs (2 cores, another benchmark running on the second core); "
        f"torch threads {args.threads}. Not a speed measurement.",
    ]
    smoothing = load_baseline(args.teacher)[2].get("label_smoothing", 0.0)
    if smoothing:
        out.append(f"This teacher was trained with label smoothing {smoothing} (its recipe), which Mueller, "
                   "Kornblith & Hinton 2019 found to make teachers distil worse; for comparison, the ResNet-20 "
                   "baseline (no smoothing) as teacher: --teacher resnet20, results in distill.json.")
    out.append("Each KD row names its settings (T only enters the KL loss); the issue's defaults are T=4, "
               "alpha=0.9. Rows without settings in their name (older runs) used T=4, alpha=0.9.")
    if not pruning:
        out = [n for n in out if not n.startswith("Pruning:")]
    reused = sorted(label for label, res in students.items() if res.get("alone_reused_from"))
    if reused:
        out.append(f"'trained alone' rows of {', '.join(reused)}: the runs of "
                   f"{sorted({res['alone_reused_from'] for res in students.values() if res.get('alone_reused_from')})} (--reuse-alone; "
                   "same model, epochs, seeds and warmup; no teacher is involved and fit is reproducible from its config).")
    return out


def payload(args, tinfo: dict, students: dict, pruning: dict | None) -> dict:
    """The results file: every part's command, the raw runs, the table and the notes."""
    script = command("distill")
    parts = merge_commands(c.removeprefix(script + " ") for c in
                           [c for r in students.values() for c in _commands(r)] + _commands(pruning or {}))
    return {
        "title": "Knowledge distillation on Fashion-MNIST: students alone vs distilled, and after pruning"
                 + f" ({args.teacher} teacher, {args.warmup:g} warmup epoch(s) for the students)",
        "command": f"{script} (parts: " + "; ".join(parts) + ")",
        "teacher": tinfo, "students": students, "pruning": pruning,
        "table": {"columns": ["model", "size / dense", "method", "accuracy (mean)", "std (pp)", "per seed (%)",
                              "vs alone / plain (pp, wins)", "seconds per run"], "rows": table(students, pruning)},
        "notes": notes(args, tinfo, students, pruning),
    }


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", nargs="*", default=["lenet300", "lenet5-slim"], choices=list(STUDENTS))
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--losses", nargs="*", default=["kl", "l2", "cosine"], choices=["kl", "l2", "cosine"])
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--teacher", default=DEFAULT_TEACHER, choices=["vgg", "resnet20"])
    ap.add_argument("--warmup", type=float, default=1.0,
                    help="LR warmup epochs for every student, alone and distilled (0: the recipe's none)")
    ap.add_argument("--prune-epochs", type=int, default=10)
    ap.add_argument("--prune-schedules", nargs="*", default=["oneshot", "agp"], choices=["oneshot", "agp"])
    ap.add_argument("--prune-variants", nargs="*", default=["plain", "dense", "big"], choices=["plain", "dense", "big"])
    ap.add_argument("--prune-temperature", type=float, default=2.0)
    ap.add_argument("--prune-alpha", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--augment", action="store_true",
                    help="students train with the recipe's shifts and flips (the teacher then runs on every batch)")
    ap.add_argument("--reuse-alone", metavar="NAME",
                    help="take the students-alone runs from results/NAME.json when their settings match")
    ap.add_argument("--no-prune", action="store_true", help="skip the pruning comparison")
    ap.add_argument("--prune-only", action="store_true", help="only the pruning comparison")
    ap.add_argument("--tables-only", action="store_true", help="no training: rebuild table and notes from the results")
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    cmd = command_from_args("distill", args)
    ds, teacher, cache, tinfo = load_teacher(args)
    students = {} if args.prune_only or args.tables_only else train_students(args, ds, teacher, cache, cmd)
    pruning = None if args.no_prune or args.tables_only else compare_pruning(args, ds, teacher, cache, cmd)
    name = results_name(args.teacher, args.warmup)
    students, pruning = merge_previous(previous(name), tinfo, students, pruning)
    write_result(name, payload(args, tinfo, students, pruning), rebuilt=args.tables_only)


if __name__ == "__main__":
    main()
