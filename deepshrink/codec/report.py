"""Per-layer compression table of a .dsz file, in the form of Deep Compression's Table 1.

For a quantized layer of ``n`` weights, ``nnz`` nonzeros and ``e`` stored entries (nonzeros
plus fillers; ``b = 0`` stores every position up to the last nonzero):

* Sparsity = 1 - nnz / n.
* Weight Bits = the quantizer's code width (``weight_bits``; else ceil(log2 K)); Index Bits =
  the index width ``b`` of the paper's fixed-width relative scheme, at its best ``b`` in 1..12
  (header field ``plain``), whatever layout the coded file uses.
* Weight Bits(H), Index Bits(H) = bits of the coded ``codes`` / index sections (tables included;
  CSR: ``rows`` + ``cols``; bitmap: ``mask``) per nonzero, in the layout the file uses (with ``b = 0`` the
  positions ride in the codes stream as zero symbols, so Index Bits(H) is 0).
* Rate(P+Q) = 1 - e_b (Weight Bits + Index Bits) / (32 n), ``e_b`` the entries of that fixed-width
  scheme: the fraction of fp32 bits removed by pruning and quantization alone;
  Rate(P+Q+H) = 1 - 8 (codes + index bytes) / (32 n), after entropy coding. Codebooks are
  outside both rates (as in the paper) but inside the file ratio.
* The file ratio = 4 x (elements of every floating-point tensor except codebooks and masks,
  i.e. the fp32 model) / file bytes: "N x smaller".
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

from torch import nn

from ..modelfile import ModelInfo
from .bitpack import raw_width
from .container import MAX_ELEMENTS, parse_file
from .model_io import dumps, read_file_bytes
from .schema import FLOAT_DTYPES

__all__ = ["CompressionRow", "CompressionReport", "compression_report", "report_from_bytes"]



@dataclass
class CompressionRow:
    """One line of the table; rates are fractions in [0, 1] (None for an unquantized layer)."""

    name: str
    numel: int
    nnz: int | None = None
    entries: int | None = None
    layout: str | None = None          # coded layout: "relative b=B", "csr" or "bitmap"
    weight_bits: int | None = None
    weight_bits_h: float | None = None
    index_bits: int | None = None
    index_bits_h: float | None = None
    rate_pq: float | None = None
    rate_pqh: float | None = None
    codes_bytes: int = 0
    index_bytes: int = 0
    codebook_bytes: int = 0
    coders: dict[str, str] = field(default_factory=dict)

    @property
    def sparsity(self) -> float | None:
        return None if self.nnz is None or not self.numel else 1 - self.nnz / self.numel


def _row(e: dict) -> CompressionRow:
    n, secs = math.prod(e["shape"]), e["sections"]
    if e["kind"] != "quantized":
        return CompressionRow(e["name"], n)
    k, nnz, entries = e["codebook"]["shape"][-1], e["nnz"], e["entries"]
    wb = e["bits"] if e["bits"] is not None else raw_width(max(k, 1))
    index_bytes = sum(secs[s]["length"] for s in ("index", "rows", "cols", "mask") if s in secs)
    ib, pq_bits = e["plain"]["index_bits"], e["plain"]["bits"]
    coded = 8 * (secs["codes"]["length"] + index_bytes)
    layout = f"relative b={e['index_bits']}" if e["layout"] == "relative" else e["layout"]
    return CompressionRow(e["name"], n, nnz, entries, layout, wb, 8 * secs["codes"]["length"] / nnz if nnz else None,
                    ib, 8 * index_bytes / nnz if nnz else None,
                    1 - pq_bits / (32 * n) if n else None, 1 - coded / (32 * n) if n else None,
                    secs["codes"]["length"], index_bytes, secs["codebook"]["length"],
                    {s: secs[s]["coder"] for s in secs})


@dataclass
class CompressionReport:
    """Rows for the quantized layers (and unquantized weights), a total row and file totals."""

    rows: list[CompressionRow]
    total: CompressionRow
    file_bytes: int
    dense_bytes: int
    raw_bytes: int                      # sections of losslessly stored tensors
    header_bytes: int

    @property
    def ratio(self) -> float:
        """fp32 model bytes / .dsz bytes."""
        return self.dense_bytes / self.file_bytes

    def summary(self) -> str:
        """One line: the file ratio and the rates of the quantized layers."""
        t = self.total
        rates = ("" if t.rate_pqh is None else
                 f"; quantized layers: {100 * (t.sparsity or 0):.2f}% zeros, Rate(P+Q) {100 * t.rate_pq:.2f}%, "
                 f"Rate(P+Q+H) {100 * t.rate_pqh:.2f}%")
        return (f".dsz file {self.file_bytes:,} bytes vs fp32 model {self.dense_bytes:,} bytes: "
                f"{self.ratio:.1f}x smaller{rates}")

    def to_dict(self) -> dict:
        def row(r: CompressionRow) -> dict:
            return {"layer": r.name, **asdict(r), "sparsity": r.sparsity}

        return {"layers": [row(r) for r in self.rows], "total": row(self.total),
                "file_bytes": self.file_bytes, "dense_bytes": self.dense_bytes, "raw_bytes": self.raw_bytes,
                "header_bytes": self.header_bytes, "ratio": self.ratio}

    def to_markdown(self) -> str:
        def pct(v):
            return "--" if v is None else f"{100 * v:.2f}%"

        def num(v, fmt="{:.2f}"):
            return "--" if v is None else fmt.format(v)

        lines = ["| Layer | Sparsity | Weight Bits | Weight Bits(H) | Index Bits | Index Bits(H) | "
                 "Rate(P+Q) | Rate(P+Q+H) | Layout |", "|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows + [self.total]:
            layout = r.layout or "--"
            lines.append(f"| {r.name} | {pct(r.sparsity)} | {num(r.weight_bits, '{}')} | {num(r.weight_bits_h)} | "
                         f"{num(r.index_bits, '{}')} | {num(r.index_bits_h)} | {pct(r.rate_pq)} | "
                         f"{pct(r.rate_pqh)} | {layout if r is not self.total else ''} |")
        lines.append("")
        lines.append(f"File: {self.file_bytes:,} bytes (header {self.header_bytes:,}, lossless tensors "
                     f"{self.raw_bytes:,}, codebooks {self.total.codebook_bytes:,}); fp32 model "
                     f"{self.dense_bytes:,} bytes; {self.ratio:.1f}x smaller.")
        return "\n".join(lines)


def _total(rows: list[CompressionRow]) -> CompressionRow:
    q = [r for r in rows if r.nnz is not None]
    n, nnz = sum(r.numel for r in q), sum(r.nnz for r in q)
    codes, index = sum(r.codes_bytes for r in q), sum(r.index_bytes for r in q)
    pq_removed = sum((1 - r.rate_pq) * 32 * r.numel for r in q if r.rate_pq is not None)
    return CompressionRow("total", n, nnz, sum(r.entries for r in q), None, None,
                    8 * codes / nnz if nnz else None, None, 8 * index / nnz if nnz else None,
                    1 - pq_removed / (32 * n) if n else None, 1 - 8 * (codes + index) / (32 * n) if n else None,
                    codes, index, sum(r.codebook_bytes for r in q))


def report_from_bytes(blob: bytes, where: str = "<bytes>", max_elements: int | None = None) -> CompressionReport:
    """The report of a .dsz blob, from its header alone."""
    parsed = parse_file(blob, where, max_elements, check_crc=False)
    rows = [_row(e) for e in parsed.entries
            if e["kind"] == "quantized" or (e["name"].endswith("weight") and len(e["shape"]) >= 2)]
    dense = 4 * sum(math.prod(e["shape"]) for e in parsed.entries if e["dtype"] in FLOAT_DTYPES and e["kind"] != "mask")
    raw = sum(s["length"] for e in parsed.entries if e["kind"] == "raw" for s in e["sections"].values())
    return CompressionReport(rows, _total(rows), len(blob), dense, raw, parsed.data_start)


def compression_report(source: str | os.PathLike | nn.Module, info: ModelInfo | None = None) -> CompressionReport:
    """Report of a .dsz file, or of the file a model would be saved as."""
    if isinstance(source, nn.Module):
        info = info or getattr(source, "deepshrink_info", None) or ModelInfo(arch="unknown")
        return report_from_bytes(dumps(source, info), "<model>", MAX_ELEMENTS)     # our own bytes
    return report_from_bytes(read_file_bytes(source), str(source))

