"""The guardrail's pieces: prompt segments, an append-only index, and calibration (the
embedder itself is `unlearnkit.models.embedder`).

- `segments`: a prompt and its sentences, so a mixed or multi-turn prompt is matched part by part;
- `GuardIndex`: one block of embeddings per request and one threshold per row. Adding a request
  appends a block: no earlier block is read, copied or re-embedded (O(1) in earlier requests).
- `calibrate_threshold`: the cut between held-out questions about the request (probes,
  paraphrases) and negatives (retain and utility prompts) that maximises TPR - FPR (Youden's J,
  via scikit-learn's ROC), placed halfway into the gap for margin, then clamped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_ROLE = re.compile(r"^(user|assistant|human|system|q|a|question|answer)\s*:\s*", re.IGNORECASE)


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

    def without(self, request_id: str) -> GuardIndex:
        """A new index without one request's block (a retired blocking entry); this one is unchanged."""
        keep = [i for i, rid in enumerate(self.request_ids) if rid != request_id]
        return GuardIndex([self.blocks[i] for i in keep], [self.thresholds[i] for i in keep],
                          [self.request_ids[i] for i in keep], self.rows_written)

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
