"""Naming conventions the file formats depend on, in one place.

Later stages keep their state beside a parameter ``<p>`` (e.g. ``weight``) under derived names,
and the model-file readers and the .dsz codec find it by those names:

* ``<p>_mask``      a pruning mask buffer (1 keeps, 0 prunes), same shape as ``<p>``;
* ``<p>_codebook``  a k-means codebook buffer, ``(K,)`` or ``(C_out, K)`` (Han et al. 2016);
* ``<p>_bits``      a plain int attribute: the bits per code of that codebook.

Also the magic numbers and metadata keys that identify deepshrink files.
"""

from __future__ import annotations

__all__ = ["MASK_SUFFIX", "CODEBOOK_SUFFIX", "BITS_SUFFIX", "EXTRA_BUFFER_SUFFIXES", "DSZ_MAGIC",
           "META_KEY", "MODEL_FORMAT", "MODEL_FORMAT_VERSION", "base_of"]

MASK_SUFFIX = "_mask"
CODEBOOK_SUFFIX = "_codebook"
BITS_SUFFIX = "_bits"
# buffers a freshly built architecture lacks and a loader registers before loading the state
EXTRA_BUFFER_SUFFIXES = (MASK_SUFFIX, CODEBOOK_SUFFIX)

DSZ_MAGIC = b"\x89DSZ\r\n\x1a\n"      # docs/FORMAT.md §1
META_KEY = "deepshrink"                # the safetensors metadata entry holding the model record
MODEL_FORMAT = "deepshrink-model"
MODEL_FORMAT_VERSION = 1


def base_of(name: str, suffix: str) -> str | None:
    """``"fc1.weight"`` for ``base_of("fc1.weight_mask", MASK_SUFFIX)``; None if ``name`` lacks the suffix."""
    return name[:-len(suffix)] if name.endswith(suffix) and len(name) > len(suffix) else None
