"""Tiny Hugging Face model folders and sentence files for the tests (no downloads, no weights).

``bert_folder(path)`` saves a random-weight ``transformers`` model built from
``BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
intermediate_size=64)`` with ``save_pretrained`` (config.json + model.safetensors), and a BERT
word-piece tokenizer over a 17-word vocabulary written beside it. ``write_sentences`` writes a
text file of random sentences from that vocabulary (blank lines included). Tests import these
(pytest puts this folder on sys.path).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

WORDS = "the a cat dog sat on mat is big small red blue runs fast slow".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_config(**extra):
    import transformers
    return transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, **extra)


def write_tokenizer(folder: Path) -> None:
    """A BERT word-piece tokenizer (pad id 0) saved in ``folder``."""
    import transformers
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder.parent / f"{folder.name}-vocab.txt"
    vocab.write_text("\n".join(SPECIAL + WORDS) + "\n")
    transformers.BertTokenizer(str(vocab)).save_pretrained(folder)   # positional: vocab file (v4 and v5)


def bert_folder(folder: Path, cls: str = "BertModel", seed: int = 0, tokenizer: bool = True, **config) -> Path:
    """A random-weight ``transformers.<cls>`` saved in ``folder`` (with a tokenizer unless told not to)."""
    import transformers
    torch.manual_seed(seed)
    model = getattr(transformers, cls)(tiny_config(**config)).eval()
    model.save_pretrained(folder)
    if tokenizer:
        write_tokenizer(folder)
    return folder


def write_sentences(path: Path, n: int = 40, seed: int = 0) -> str:
    """``n`` random sentences of 2..9 words (with blank lines between some); returns ``text:<path>``."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))))
        if i % 7 == 0:
            lines.append("   ")
    path.write_text("\n".join(lines) + "\n")
    return f"text:{path}"


def perturbed_copy(folder: Path, out: Path, seq_len: int = 16, scale: float = 0.05, seed: int = 0) -> Path:
    """The model in ``folder`` with seeded Gaussian noise (``scale``) added to every parameter,
    saved as a deepshrink file at ``out``: a stand-in for a compressed model to measure fidelity on."""
    from deepshrink.io import load_model, save_model
    model, info = load_model(f"hf:{folder}", seq_len=seq_len)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    save_model(model, out, info)
    return out
