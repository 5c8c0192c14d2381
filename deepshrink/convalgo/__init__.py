"""Convolution algorithms, each an exact implementation checked against ``F.conv2d``, with its
workspace formula, measured peak memory and time (the competition write-up's memory section):
the direct loop, im2col + GEMM, kn2row, Winograd F(2x2, 3x3) and FFT.

* :mod:`.shapes`: the checked shape of one convolution and the shared shift helper;
* one module per algorithm (:mod:`.direct`, :mod:`.im2col`, :mod:`.kn2row`, :mod:`.winograd`,
  :mod:`.fft`): ``conv2d_<name>`` and ``workspace_<name>``;
* :mod:`.algorithms`: the five by name, ``supports`` and ``workspace_bytes``;
* :mod:`.measure`: peak bytes of a call (the profiler's allocation events) and median time;
* :mod:`.table`: the table for every Conv2d of a model (``deepshrink conv-table``).
"""

from .algorithms import ALGORITHMS, NAMES, Algorithm, algorithm, conv2d, supports, workspace_bytes
from .direct import conv2d_direct
from .fft import conv2d_fft
from .im2col import conv2d_im2col
from .kn2row import conv2d_kn2row
from .shapes import ConvShape, conv_shape
from .winograd import conv2d_winograd

__all__ = ["ALGORITHMS", "NAMES", "Algorithm", "algorithm", "conv2d", "supports", "workspace_bytes", "ConvShape",
           "conv_shape", "conv2d_direct", "conv2d_im2col", "conv2d_kn2row", "conv2d_winograd", "conv2d_fft"]
