"""A prompt prefix that every row of a batch shares runs once, and its keys and values serve all rows.

With a chat model most of a question's tokens are the template's: SmolLM2's system prompt and
user marker are about half of a QA pair. Training (`prepare`, every loss-based method), scoring
and greedy generation run that prefix on one row, repeat its KV cache across the batch and run
only the rest of each row. Gradients flow through the shared prefix as through the copies it
replaces, so losses and gradients are those of the plain pass (tests/test_fastpath.py).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from unlearnkit.data.formatting import IGNORE

MIN_SHARED = 4  # shorter common prefixes are not worth a second forward call


def cache_argument(model: Any) -> str:
    """The KV-cache keyword (and output field): `cache` in recent transformers, `past_key_values`
    before. A PEFT wrapper passes keywords through, so its base model decides."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def supports_kv_cache(model: Any) -> bool:
    """Whether the model takes a KV cache (a transformers model does; a wrapper module such as
    the logit offset's combined model may not, and then runs the plain pass)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool({"cache", "past_key_values"} & set(inspect.signature(inner.forward).parameters))


def shared_prefix(ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> int:
    """Length of the leading tokens that every row has in common and that are unpadded. It stops
    before the first labelled position, since the prefix's last logit (which predicts the next
    token) is not computed, and leaves every row at least one token after it."""
    same = (ids == ids[:1]).all(0) & (mask == 1).all(0)
    labelled = (labels != IGNORE).any(0).nonzero()
    limit = min(int(mask.sum(1).min()) - 1, int(labelled[0]) - 1 if len(labelled) else ids.shape[1])
    differ = (~same[: max(limit, 0)]).nonzero()
    return int(differ[0]) if len(differ) else max(limit, 0)


def prefix_cache(model: Any, prefix_ids: torch.Tensor, rows: int) -> tuple[Any, Any]:
    """(the model's output on the 1-row `prefix_ids`, its KV cache repeated for `rows` rows)."""
    key = cache_argument(model)
    out = model(input_ids=prefix_ids, attention_mask=torch.ones_like(prefix_ids), use_cache=True)
    cache = getattr(out, key)
    cache.batch_repeat_interleave(rows)
    return out, cache


def forward_sharing_prefix(model: Any, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, *, every_position: bool) -> tuple[torch.Tensor, int]:
    """(logits, offset) of a right-padded batch, its common prefix run once where it is long enough.

    `every_position`: logits at every position `[B, T, V]` (offset 0), the prefix's repeated
    across rows (losses that read the prompt's logits: KL and JSD on retain inputs). Otherwise
    the prefix's logits are dropped: logits[t] belongs to position offset + t.
    """
    shared = shared_prefix(ids, mask, labels) if len(ids) > 1 and supports_kv_cache(model) else 0
    if shared < MIN_SHARED:
        return model(input_ids=ids, attention_mask=mask).logits, 0
    first, cache = prefix_cache(model, ids[:1, :shared], len(ids))
    rest = model(input_ids=ids[:, shared:], attention_mask=mask, use_cache=True, **{cache_argument(model): cache})
    if not every_position:
        return rest.logits, shared
    return torch.cat([first.logits.expand(len(ids), -1, -1), rest.logits], 1), 0


def common_prefix(rows: list[list[int]]) -> int:
    """Length of the leading ids that every row shares, leaving each row at least one id after it
    (generation needs a last prompt token to run)."""
    limit = min(len(r) for r in rows) - 1
    for position in range(max(limit, 0)):
        token = rows[0][position]
        if any(r[position] != token for r in rows):
            return position
    return max(limit, 0)
