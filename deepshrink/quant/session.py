"""A small ONNX Runtime session wrapper: fixed thread count, batched inference, accuracy.
The input is float32 (images) or int64 token ids, as the graph declares.

ONNX Runtime applies its graph optimisations when the session is created (level ALL: the QDQ
fusions to QLinearConv/QGemm happen here); ``fused_ops()`` reports which operators the
optimised graph really runs, so a test can check that int8 kernels are used.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..data import Dataset, Split
from ..errors import ModelError

__all__ = ["OrtSession"]


class OrtSession:
    """``OrtSession(path, threads=1, batch_size=256)``; ``run(x) -> logits`` in batches."""

    def __init__(self, path: str | os.PathLike, threads: int = 1, batch_size: int = 256,
                 optimized_path: str | None = None):
        import onnxruntime as ort  # here, not at the top: `import deepshrink` stays light
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if optimized_path:
            opts.optimized_model_filepath = str(optimized_path)
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise ModelError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]})") from None
        self.path, self.threads, self.batch_size = Path(path), threads, batch_size
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.takes_tokens = first.type == "tensor(int64)"     # token ids (N, L); else float32

    @property
    def metadata(self) -> dict[str, str]:
        """The file's ``metadata_props`` (input layout, exporter, normalisation ...)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def _inputs(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if not self.takes_tokens:
            return np.ascontiguousarray(x, dtype=np.float32)
        if x.dtype.kind not in "iuf" or (x.dtype.kind == "f" and not np.array_equal(x, np.round(x))):
            raise ModelError(f"{self.path}: the model takes int64 token ids (N, L); got {x.dtype} values "
                             "that are not all integers")
        return np.ascontiguousarray(x, dtype=np.int64)

    def run(self, x: torch.Tensor | np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Outputs for ``x`` (N, ...), float32 images or int64 token ids (N, L) as the graph's
        input says, computed ``batch_size`` rows at a time."""
        x = self._inputs(x)
        bs = batch_size or self.batch_size
        outs = [self.session.run(None, {self.input_name: x[lo:lo + bs]})[0] for lo in range(0, len(x), bs)]
        return np.concatenate(outs) if outs else np.zeros((0,), np.float32)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(x))

    def evaluate(self, data: Split | Dataset) -> float:
        """Top-1 accuracy in [0, 1] (a Dataset means its test split)."""
        split = data.test if isinstance(data, Dataset) else data
        logits = self.run(split.x)
        return float((logits.argmax(1) == split.y.numpy()).mean())

    def fused_ops(self) -> Counter:
        """Operator types of the graph after ONNX Runtime's optimisations."""
        import onnx
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "optimized.onnx"
            OrtSession(self.path, self.threads, self.batch_size, optimized_path=str(out))
            model = onnx.load(str(out))
        return Counter(n.op_type for n in model.graph.node)
