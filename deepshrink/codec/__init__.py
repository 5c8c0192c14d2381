"""The .dsz codec: pruned + weight-shared models as sparse, entropy-coded files (Deep Compression).

Han, Mao & Dally (ICLR 2016): after pruning and weight sharing, store each layer as a relative
sparse index plus codebook indices, then Huffman-code both streams. Here each section takes the
smallest of fixed-width, canonical Huffman and ANS coding, a layer's positions the smallest of
the relative index, CSR and a column-adaptive bitmap, and the header is zlib'd with a preset
dictionary of its field names; the format (version 3, which also reads version 2) is
docs/FORMAT.md.

``save_compressed(model, path, info=None)`` / ``load_compressed(path) -> nn.Module`` (bit-exact
weights), ``read_compressed_info(path)``, ``compression_report(path_or_model)``; ``dumps`` /
``loads`` are the same on bytes.
"""

from .container import MAGIC, MAX_ELEMENTS, is_dsz
from .model_io import dumps, load_compressed, loads, read_compressed_info, save_compressed
from .report import CompressionReport, CompressionRow, compression_report, report_from_bytes

# What a user calls; the entropy coders (``deepshrink.codec.entropy``: encode_symbols,
# decode_symbols, entropy_bits) and the container/schema layers are imported from their modules.
__all__ = [
    "MAGIC", "MAX_ELEMENTS", "is_dsz",
    "save_compressed", "load_compressed", "read_compressed_info", "dumps", "loads",
    "CompressionReport", "CompressionRow", "compression_report", "report_from_bytes",
]
