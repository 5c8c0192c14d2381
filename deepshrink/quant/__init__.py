"""Quantization: linear (affine) int8 and below, integer-only inference, QAT, k-means sharing.

Jacob et al. 2018 (linear, integer-only), Han, Mao & Dally 2016 (k-means weight sharing).
"""

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
]
