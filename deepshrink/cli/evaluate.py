"""``deepshrink evaluate``: the test accuracy of a model file, and with ``--reference`` its
fidelity to the original model (cosine of outputs; top-1 agreement and KL of logits)."""

from __future__ import annotations

from ..pipelines.evaluate import evaluate_file
from .common import add_model_file_args, model_file_options, print_json

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="test accuracy of a model file, or its fidelity to the original")
    p.add_argument("file", help="model file (.safetensors, .dsz, .pt/.pth with --model) or hf:DIR")
    p.add_argument("--data", help="data spec (default: the one the model was trained on)")
    p.add_argument("--reference", metavar="ORIGINAL",
                   help="the model before compression (a model file or hf:DIR): measure agreement with it on the "
                        "test split (mean/min cosine of outputs; top-1 agreement and mean KL of logits); needed "
                        "for unlabelled data such as text:FILE (default: none, the accuracy only)")
    p.add_argument("--json", action="store_true", help="print one JSON object (the accuracy, the fidelity)")
    add_model_file_args(p)
    p.set_defaults(func=cmd_evaluate)


def _fidelity_text(fid) -> str:
    text = f"mean cosine {fid.cosine_mean:.6f} (min {fid.cosine_min:.6f})"
    if fid.kind == "logits":
        text += f", top-1 agreement {fid.agreement * 100:.2f}%, mean KL {fid.kl_mean:.6f} nats"
    return text


def cmd_evaluate(args) -> int:
    run = evaluate_file(args.file, data=args.data, reference=args.reference, **model_file_options(args))
    if args.json:
        out = {"file": args.file, "data": run.data, "images": run.images, "labelled": run.labelled,
               "accuracy": run.accuracy}
        if run.adaptive is not None:
            out["adaptive"] = run.adaptive
        if run.fidelity is not None:
            out["reference"] = run.reference
            out["fidelity"] = run.fidelity.to_dict()
        print_json(out)
        return 0
    samples = f"{run.images} {'images' if run.labelled else 'samples'}"
    if run.accuracy is not None and run.adaptive is not None:
        a = run.adaptive
        print(f"{args.file}: test accuracy on {run.data} ({samples}): early exit ({a['policy']}) "
              f"{a['accuracy'] * 100:.2f}% at {a['expected_macs']:,.0f} MACs per sample; every sample through the "
              f"whole model {run.accuracy * 100:.2f}% at {a['original_macs']:,.0f}")
        print("samples leaving at each exit: " + ", ".join(
            f"{name} {share * 100:.1f}%" for name, share in zip([*a["layers"], "output"], a["shares"])))
    elif run.accuracy is not None:
        print(f"{args.file}: test accuracy {run.accuracy * 100:.2f}% on {run.data} ({samples})")
    if run.fidelity is not None:
        print(f"{args.file}: fidelity to {run.reference} on the test split of {run.data} ({samples}, "
              f"{run.fidelity.kind}): {_fidelity_text(run.fidelity)}")
    return 0
