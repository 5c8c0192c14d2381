"""``deepshrink run`` as one call: a recipe (:mod:`deepshrink.recipe`) replayed on a model file, each
step its own pipeline, a ledger row (:mod:`deepshrink.ledger`) measured after each.

Each step runs from the previous step's file to a new file in a work folder beside ``out``, so
what one step leaves for the next - masks, channel plans, k-means codebooks, quantization grids -
travels in the model files, which already record them; ``encode`` writes the ``.dsz``. The last
file is then written to ``out`` with the ledger in its metadata (``ModelInfo.extra["ledger"]``,
in a ``.safetensors`` header or a ``.dsz`` one), the page ``OUT.report.html`` beside it
(:mod:`.run_report`: the ledger and the final model's weights), and the work folder removed.

Replaying a recipe on the same input writes the same bytes: every step is seeded from its own
``seed`` before it runs, the stored ledger leaves out the measured times, and the history the
file keeps names the work files by their step (``<step 2 (kmeans)>``) and leaves out durations
(keys ending in ``seconds``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from ..codec import load_compressed, save_compressed
from ..errors import ConfigError
from ..io import load_model
from ..ledger import LedgerRow, flags, format_ledger, measure_row, time_against
from ..modelfile import read_safetensors, save_state
from ..names import DSZ_MAGIC
from ..compress import compress_file
from ..recipe import DSZ_STEPS, Recipe, Step
from ..train import seed_everything
from .distill import distill_file
from .inputs import data_for
from .prune import prune_file
from .prune_channels import prune_channels_file
from .quantize import quantize_file
from .run_report import run_report_path, write_run_report

__all__ = ["RecipeRun", "run_recipe", "read_ledger", "LEDGER_KEY"]

LEDGER_KEY = "ledger"


@dataclass
class RecipeRun:
    recipe: Recipe
    out: Path
    rows: list[LedgerRow]           # the input, then one per step

    def table(self) -> str:
        return format_ledger(self.rows)

    def to_dict(self) -> dict:
        return {"out": os.fspath(self.out), "size_bytes": os.path.getsize(self.out),
                "report": os.fspath(run_report_path(self.out)),
                "recipe": self.recipe.to_list(), "ledger": [r.to_dict() for r in self.rows]}


def _with_run(cfg, progress: bool, verbose: bool):
    """``cfg`` with the command's progress and verbosity (where the config has them)."""
    names = set(getattr(cfg, "__dataclass_fields__", {}))
    return replace(cfg, **{k: v for k, v in (("progress", progress), ("verbose", verbose)) if k in names})


def _run_step(step: Step, src: str, dst: Path, original: str, data: str | None, opts: dict,
              progress: bool, verbose: bool) -> None:
    """Run ``step`` from the file ``src`` to ``dst`` through its pipeline."""
    cfgs = {k: _with_run(c, progress, verbose) for k, c in step.configs.items()}
    if step.name == "prune":
        prune_file(src, dst, cfgs["PruneConfig"], finetune=step.finetune, data=data, **opts)
    elif step.name == "prune-channels":
        prune_channels_file(src, dst, cfgs["ChannelConfig"], finetune=step.finetune, data=data, **opts)
    elif step.name == "distill":
        opts = {k: v for k, v in opts.items() if k != "model_kwargs"}
        distill_file(step.teacher or original, src, dst, cfgs["DistillConfig"], training=cfgs["StudentTraining"],
                     finetune=step.finetune, data=data, **opts)
    elif step.name in ("quantize", "qat", "kmeans"):
        quantize_file(src, dst, cfgs["QuantizeConfig"], finetune=step.finetune, data=data, **opts)
    elif step.name == "compress":
        compress_file(src, os.fspath(dst), cfgs["CompressConfig"], data, opts.get("arch"), opts.get("trust_code", False),
                      model_kwargs=opts.get("model_kwargs"), seq_len=opts.get("seq_len"),
                      tokenizer=opts.get("tokenizer"))
    elif step.name == "encode":
        model, info = load_model(src, **{k: v for k, v in opts.items() if k != "model_kwargs"},
                                 kwargs=opts.get("model_kwargs"))
        info.record("encode", format="dsz")
        save_compressed(model, dst, info)
    else:  # pragma: no cover - recipe.STEP_KINDS and this table are kept together
        raise ConfigError(f"{step.label}: no pipeline for this step")


def _scrub(obj, names: dict[str, str]):
    """``obj`` with work-file paths replaced by their step's name and durations left out."""
    if isinstance(obj, dict):
        return {k: _scrub(v, names) for k, v in obj.items() if not str(k).endswith("seconds")}
    if isinstance(obj, list):
        return [_scrub(v, names) for v in obj]
    if isinstance(obj, str):
        for path, label in names.items():
            obj = obj.replace(path, label)
    return obj


def _is_dsz(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(DSZ_MAGIC)) == DSZ_MAGIC


def _write_final(last: Path, out: Path, recipe: Recipe, rows: list[LedgerRow], names: dict[str, str],
                 trust_code: bool) -> None:
    """``last`` written to ``out`` (atomically) with the ledger in its metadata."""
    ledger = {"recipe": recipe.to_list(), "rows": [r.stored() for r in rows],
              "not_stored": "measured latency (differs from run to run): printed by deepshrink run only"}
    if _is_dsz(last):
        model = load_compressed(last, trust_code=trust_code)
        info = model.deepshrink_info
        info.history = _scrub(info.history, names)
        info.extra[LEDGER_KEY] = ledger
        save_compressed(model, out, info)
        return
    state, info = read_safetensors(last)
    info.history = _scrub(info.history, names)
    info.extra[LEDGER_KEY] = ledger
    save_state(state, out, info)


def _check_out(recipe: Recipe, out: Path) -> None:
    encodes = recipe.steps[-1].name in DSZ_STEPS
    if encodes != (out.suffix == ".dsz"):
        raise ConfigError(f"{out}: the recipe's last step writes a "
                          f"{'.dsz' if encodes else '.safetensors'} file; name --out accordingly"
                          + ("" if encodes else " (or end the recipe with an encode step)"))


def run_recipe(recipe: Recipe, src: str | os.PathLike, out: str | os.PathLike, *, data: str | None = None,
               latency: bool = True, progress: bool = True, verbose: bool = True, arch: str | None = None,
               trust_code: bool = False, model_kwargs: dict | None = None, seq_len: int | None = None,
               tokenizer: str | None = None, say=print) -> RecipeRun:
    """Replay ``recipe`` on the model file ``src`` and write the result, its ledger inside, to ``out``.
    ``latency``: time each step's model against the one before (batch 1); ``say``: where the
    one-line announcements of the steps go."""
    src, out = os.fspath(src), Path(out)
    _check_out(recipe, out)
    first = {k: v for k, v in (("arch", arch), ("model_kwargs", model_kwargs), ("seq_len", seq_len),
                               ("tokenizer", tokenizer)) if v is not None}
    model, info = load_model(src, **{k: v for k, v in first.items() if k != "model_kwargs"},
                             kwargs=model_kwargs, trust_code=trust_code)
    ds = data_for(info, data, src, trust_code)
    x = ds.test.x[:1]
    rows = [measure_row("input", src, model, ds, progress)]
    if latency:
        time_against(rows[0], model, None, x)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".run", dir=out.parent))
    names: dict[str, str] = {}
    trusted = trust_code or arch is not None
    try:
        cur, before = src, model
        for step in recipe.steps:
            dst = work / f"step{step.index}-{step.name}{'.dsz' if step.name in DSZ_STEPS else '.safetensors'}"
            names[os.fspath(dst)] = f"<{step.label}>"
            say(f"== {step.label}: {step.options or 'defaults'}")
            seed_everything(step.seed)
            # the input loaded: its architecture is trusted (named with --model, or --trust-code)
            opts = {"trust_code": trusted, **(first if cur == src else {})}
            _run_step(step, cur, dst, src, data, opts, progress, verbose)
            model, _ = load_model(dst, trust_code=trusted)
            row = measure_row(f"{step.index} {step.name}", dst, model, ds, progress)
            if latency:
                time_against(row, model, before, x)
            row.flags = flags(row, rows[-1])
            rows.append(row)
            cur, before = os.fspath(dst), model
        _write_final(Path(cur), out, recipe, rows, names, trusted)
        run = RecipeRun(recipe, out, rows)
        write_run_report(run, model)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return run


def read_ledger(info) -> dict | None:
    """The ledger a file's ModelInfo keeps (None when it was not written by ``deepshrink run``)."""
    return info.extra.get(LEDGER_KEY)
