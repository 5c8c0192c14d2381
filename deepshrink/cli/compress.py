"""``deepshrink compress``: the Deep Compression pipeline from a model file to a .dsz file."""

from __future__ import annotations

from pathlib import Path

from ..compress import LABELLED_DEFAULTS as LABELLED
from ..compress import TEXT_DEFAULTS as TEXT
from ..compress import METHODS, CompressConfig, compress_file
from ..errors import ConfigError
from ..prune.finetune import PRUNE_RULES
from ..prune.threshold import parse_layer_values
from ..pipelines.compress_report import report_paths
from .common import (FINITE, FRACTION, NON_NEGATIVE, POSITIVE, add_augment_arg, add_json_arg, add_lr_arg,
                     add_model_file_args, add_out_arg, add_progress_arg, add_seed_arg, add_target_args,
                     add_val_size_arg, augment_choice, check_output_path, check_val_size_arg, json_output,
                     model_file_options, output_facts, print_json, target_globs)
from .parser import add_option

__all__ = ["register", "cmd_compress"]


def register(sub) -> None:
    p = sub.add_parser("compress", help="prune + k-means share + encode a model into a .dsz file (Deep Compression)",
                       description="Sensitivity-guided AGP pruning, k-means weight sharing with centroid "
                                   "fine-tuning, then sparse relative-index + entropy coding into a .dsz file. "
                                   "Prints the per-layer table and writes a markdown report with plots beside it, "
                                   "and the same as one self-contained HTML page. "
                                   "The scan, the accuracy budget and the retries are judged on a validation split "
                                   "carved from the training data and held out of the fine-tuning; the test split "
                                   "only gives the reported accuracy.")
    p.add_argument("file", help="trained model (.safetensors, or .pt/.pth with --model)")
    add_out_arg(p, "the .dsz file (its report and plots are written beside it)")
    p.add_argument("--max-drop", action=NON_NEGATIVE, default=CompressConfig.max_drop, metavar="PP",
                   help="largest validation-accuracy drop allowed, in percentage points; on unlabelled text, points "
                        f"of mean cosine to the original (default {LABELLED['max_drop']}; text: {TEXT['max_drop']})")
    p.add_argument("--data", help="data spec (default: the one recorded in the model file)")
    p.add_argument("--sparsity", action=FINITE, default=CompressConfig.sparsity,
                   help="first total sparsity target; 0: nothing pruned, weight sharing and entropy coding only "
                        f"(default {LABELLED['sparsity']}; text: {TEXT['sparsity']:g})")
    p.add_argument("--allocation", choices=("sensitivity", "global"), default=CompressConfig.allocation,
                   help="per-layer sparsities from a sensitivity scan, or one global threshold (default "
                        f"{LABELLED['allocation']}; text: {TEXT['allocation']})")
    p.add_argument("--sparsity-map", metavar="LAYER=S,...",
                   help="per-layer sparsities by hand instead of the scan, e.g. fc1=0.95,fc2=0.9 (layers left "
                        "out are not pruned; default: none)")
    p.add_argument("--threshold-std", action=NON_NEGATIVE, metavar="S",
                   help="prune every weight with |w| < S x std of its layer (x --threshold-scale), instead of "
                        "the scan (default: none)")
    p.add_argument("--threshold-scale", metavar="LAYER=M,...",
                   help="per-layer multipliers of --threshold-std, e.g. conv1=0.5 (default: 1 for every layer)")
    add_option(p, "--finetune-epochs", aliases=("--prune-epochs",), dest="finetune_epochs", type=int,
               default=CompressConfig.prune_epochs, metavar="N",
               help="pruning fine-tuning epochs, over which AGP raises the sparsity (default "
                    f"{LABELLED['prune_epochs']}; text: {TEXT['prune_epochs']})")
    p.add_argument("--bit-widths", choices=("auto", "fixed"), default=CompressConfig.bit_widths,
                   help="auto: each layer's (and bias's) fewest k-means bits, 2-8, whose validation drop plus "
                        "--bit-se standard errors stays within --bit-tolerance when shared alone; fixed: --bits / --fc-bits (default "
                        f"{LABELLED['bit_widths']}, or fixed when --bits or --fc-bits is given; text: {TEXT['bit_widths']})")
    p.add_argument("--bit-tolerance", action=NON_NEGATIVE, default=CompressConfig.bit_tolerance, metavar="PP",
                   help="validation points one layer's sharing may cost under --bit-widths auto; halved up to "
                        "twice while the shared model is over --max-drop (default %(default)s)")
    p.add_argument("--bit-se", action=NON_NEGATIVE, default=CompressConfig.bit_se, metavar="Z",
                   help="paired standard errors added to each layer's measured drop (a gain counts as 0) before "
                        "--bit-tolerance judges it, on labelled data (default %(default)s; 0: the drop alone)")
    add_option(p, "--bits", aliases=("--conv-bits",), dest="bits", type=int, default=None,
               help=f"k-means bits of the conv layers with --bit-widths fixed (default {CompressConfig.conv_bits})")
    p.add_argument("--fc-bits", type=int, default=CompressConfig.fc_bits,
                   help=f"k-means bits for linear layers with --bit-widths fixed (default {LABELLED['fc_bits']}; "
                        f"text: {TEXT['fc_bits']})")
    p.add_argument("--share-biases", choices=("on", "off"), default=None,
                   help="share the biases of the shared layers too, at measured widths (or 8 bits when fixed) "
                        f"(default {'on' if LABELLED['share_biases'] else 'off'}; text: "
                        f"{'on' if TEXT['share_biases'] else 'off'})")
    p.add_argument("--keep-dead", action="store_true",
                   help="keep the hidden units pruning leaves with no input or no output (default: removed, "
                        "which shrinks the layers; outputs are unchanged; text: kept)")
    p.add_argument("--method", choices=METHODS, default=CompressConfig.method,
                   help="agp: magnitude pruning raised to the sparsity target over the fine-tuning; variational: "
                        "sparse variational dropout (Molchanov et al. 2017), which learns the sparsity over "
                        "--finetune-epochs instead of taking a target (default %(default)s)")
    p.add_argument("--layer-bits", metavar="LAYER=B,...",
                   help="k-means bits per layer, over --bits/--fc-bits, e.g. fc1=3,fc3=6 (default: none)")
    p.add_argument("--linear-codebooks", metavar="LAYER,...",
                   help="layers whose codebook stays linear: 2^b evenly spaced values, no k-means steps "
                        "(default: none, k-means everywhere)")
    p.add_argument("--embedding-bits", type=int, default=CompressConfig.embedding_bits,
                   help="k-means bits for embedding tables, 0 leaves them in fp32 (default "
                        f"{LABELLED['embedding_bits']}; text: {TEXT['embedding_bits']})")
    p.add_argument("--rule", choices=PRUNE_RULES, default=CompressConfig.rule,
                   help="pruning rule: magnitude (with AGP), or reconstruct (Wanda masks and a least-squares refit "
                        "of the kept Linear weights on training samples, then fine-tuning) (default: magnitude, "
                        "reconstruct on text data)")
    p.add_argument("--centroid-epochs", type=int, default=CompressConfig.centroid_epochs,
                   help="centroid fine-tuning epochs (default %(default)s)")
    p.add_argument("--attempts", type=int, default=CompressConfig.attempts,
                   help="tries, each --backoff lower in sparsity, while over the accuracy budget (default %(default)s)")
    p.add_argument("--backoff", action=NON_NEGATIVE, default=CompressConfig.backoff, metavar="S",
                   help="how much lower each retry's sparsity is, as a fraction (default %(default)s: two points)")
    p.add_argument("--distill", action="store_true", help="the dense model as teacher while fine-tuning")
    p.add_argument("--teacher", metavar="FILE",
                   help="another model as teacher while fine-tuning (e.g. a larger baseline; default: none)")
    p.add_argument("--kd-temperature", action=POSITIVE, default=CompressConfig.kd_temperature,
                   help="KD temperature (default %(default)s)")
    p.add_argument("--kd-alpha", action=FRACTION, default=CompressConfig.kd_alpha,
                   help="weight of the KD term (default %(default)s)")
    add_lr_arg(p, "prune", f"the pruning fine-tuning (the centroids fine-tune at {CompressConfig.centroid_lr:g})")
    add_target_args(p)
    add_augment_arg(p)
    add_val_size_arg(p, "the scan, the accuracy budget and the retries are judged", aliases=("--scan-size",))
    add_seed_arg(p, CompressConfig.seed)
    add_progress_arg(p)
    add_json_arg(p)
    add_model_file_args(p)
    p.set_defaults(func=cmd_compress)


def _layer_options(args) -> dict:
    """The per-layer options typed as NAME=VALUE lists, as CompressConfig fields."""
    bits = parse_layer_values(args.layer_bits, "--layer-bits")
    for name, b in bits.items():
        if b != int(b):
            raise ConfigError(f"--layer-bits: {name!r} has {b:g}, not a whole number of bits")
    return {"layer_sparsity": parse_layer_values(args.sparsity_map, "--sparsity-map"),
            "threshold_std": args.threshold_std,
            "threshold_scale": parse_layer_values(args.threshold_scale, "--threshold-scale"),
            "bits": {k: int(v) for k, v in bits.items()},
            "linear_codebooks": tuple(n.strip() for n in (args.linear_codebooks or "").split(",") if n.strip())}


def cmd_compress(args) -> int:
    check_output_path(args.out)
    for path in report_paths(Path(args.out)).values():  # the report and its plots lie beside it
        check_output_path(path, "--out (its report)")
    if args.distill and args.teacher:
        raise ConfigError("give --distill (the dense model as teacher) or --teacher FILE, not both")
    check_val_size_arg(args)
    cfg = CompressConfig(max_drop=args.max_drop, sparsity=args.sparsity, allocation=args.allocation,
                         val_size=args.val_size, augment=augment_choice(args),
                         prune_epochs=args.finetune_epochs,
                         conv_bits=args.bits if args.bits is not None else CompressConfig.conv_bits,
                         fc_bits=args.fc_bits, bit_tolerance=args.bit_tolerance, bit_se=args.bit_se,
                         method=args.method,
                         bit_widths=args.bit_widths or ("fixed" if args.bits is not None or args.fc_bits is not None
                                                        else None),
                         share_biases=None if args.share_biases is None else args.share_biases == "on",
                         remove_dead=False if args.keep_dead else None, embedding_bits=args.embedding_bits, rule=args.rule,
                         centroid_epochs=args.centroid_epochs, distill=args.distill,
                         kd_temperature=args.kd_temperature, kd_alpha=args.kd_alpha, prune_lr=args.lr,
                         attempts=args.attempts, backoff=args.backoff, seed=args.seed, progress=not args.no_progress,
                         **_layer_options(args), **target_globs(args))
    opts = model_file_options(args)
    with json_output(args.json):
        result, report, md = compress_file(args.file, args.out, cfg, args.data, opts["arch"], opts["trust_code"],
                                           teacher=args.teacher, model_kwargs=opts.get("model_kwargs"),
                                           seq_len=opts.get("seq_len"), tokenizer=opts.get("tokenizer"))
    if args.json:
        facts = {k: v for k, v in result.to_dict().items() if k not in ("attempts", "bits", "layers", "seconds")}
        print_json({"command": "compress", **output_facts(args.out), "file": args.file, "report": str(md),
                    "report_html": str(report_paths(Path(args.out))["html"]),
                    "ratio": report.ratio, "sparsity": report.total.sparsity, "attempts": len(result.attempts),
                    **facts, "seconds": result.seconds})
        return 0 if result.within_budget else 1
    print()
    print(report.to_markdown())
    print()
    before, after = result.accuracy_before, result.accuracy_after
    val_before, val_after = result.val_accuracy_before, result.val_accuracy_after
    print(f"validation {result.metric} {val_before * 100:.2f}% -> {val_after * 100:.2f}% "
          f"({(val_after - val_before) * 100:+.2f} pp; budget -{result.max_drop} pp: "
          f"{'within' if result.within_budget else 'OVER BUDGET'}) on {result.val_on}")
    print(f"test {result.metric} {before * 100:.2f}% -> {after * 100:.2f}% ({(after - before) * 100:+.2f} pp) "
          f"on {result.test_on}, reported only")
    print(report.summary())
    print(f"-> {args.out} (report: {md}, {report_paths(Path(args.out))['html']})")
    return 0 if result.within_budget else 1
