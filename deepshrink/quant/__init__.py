"""Quantization: linear (affine) int8 and below, integer-only inference, QAT, k-means sharing,
module swap (integer twins of Linear/Conv/Embedding for any nn.Module, or of a fake-quantized
model's layers: ``to_swap``).

Jacob et al. 2018 (linear, integer-only), Han, Mao & Dally 2016 (k-means weight sharing).
"""

from .convert import to_swap
from .export import export_onnx, export_ort_dynamic_int8, export_qdq
from .graph import QuantConfig
from .integer import IntegerModel
from .kmeans import KMeansConfig, centroid_finetune, kmeans_quantize_, quantized_layers
from .observers import OBSERVERS
from .ptq import is_quantized_file, load_quantized, quantize_ptq, save_quantized
from .qmodules import QuantConv, QuantEmbedding, QuantLinear
from .qat import qat_finetune
from .swap import swap_quantize, swapped_layers
from .session import OrtSession

# What a user calls; the parts (schemes, observers, fake quantizers, BN folding, requantization)
# are imported from their own modules, e.g. ``from deepshrink.quant.fold import fold_batchnorm``.
# ONNX and ONNX Runtime are imported only when an export or a session runs.
__all__ = [
    "QuantConfig", "OBSERVERS", "quantize_ptq", "qat_finetune", "save_quantized", "load_quantized",
    "is_quantized_file", "IntegerModel", "export_onnx", "export_ort_dynamic_int8", "export_qdq", "OrtSession",
    "KMeansConfig", "kmeans_quantize_", "centroid_finetune", "quantized_layers",
    "swap_quantize", "swapped_layers", "QuantLinear", "QuantConv", "QuantEmbedding", "to_swap",
]
