"""Quantization: linear (affine) int8 and below, integer-only inference, QAT, k-means sharing.

Jacob et al. 2018 (linear, integer-only), Han, Mao & Dally 2016 (k-means weight sharing).
"""

from .export import export_onnx, export_qdq
from .fakequant import FakeQuant, QuantLayer, SharedFakeQuant
from .fold import fold_batchnorm, fold_conv_bn
from .graph import QuantConfig, prepare
from .integer import IntegerModel
from .linear import QScheme, choose_qparams, dequantize, fake_quantize, lsq_fake_quantize, quantize
from .observers import OBSERVERS, make_observer
from .ptq import calibrate, freeze, is_quantized_file, load_quantized, quantize_ptq, save_quantized
from .qat import prepare_qat, qat_finetune
from .requant import quantize_multiplier, requantize
from .session import OrtSession
from .kmeans import (
    KMeansConfig,
    centroid_finetune,
    kmeans_codebook,
    kmeans_quantize_,
    quantized_layers,
)

__all__ = [
    "KMeansConfig",
    "centroid_finetune",
    "kmeans_codebook",
    "kmeans_quantize_",
    "quantized_layers",
    "QScheme", "choose_qparams", "quantize", "dequantize", "fake_quantize", "lsq_fake_quantize",
    "OBSERVERS", "make_observer", "fold_batchnorm", "fold_conv_bn", "FakeQuant", "SharedFakeQuant",
    "QuantLayer", "QuantConfig", "prepare", "calibrate", "freeze", "quantize_ptq", "save_quantized",
    "load_quantized", "is_quantized_file", "prepare_qat", "qat_finetune", "quantize_multiplier",
    "requantize", "IntegerModel", "export_onnx", "export_qdq", "OrtSession",
]
