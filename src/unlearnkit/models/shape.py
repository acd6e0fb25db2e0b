"""A decoder's shape, read from its config alone (no weights loaded): what `unlearnkit estimate`
needs to size a run (docs/scale.md). Counts assume the Llama layout (Llama, Mistral, Qwen2 and
SmolLM share it): bias-free projections, grouped-query attention, a gated MLP, RMS norms."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from unlearnkit.errors import ModelError
from unlearnkit.models.loading import DEFAULT_NAME, default_checkpoint_dir, ensure_default

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # wrap_lora's default


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def projections(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear map of one layer."""
        h, kv = self.hidden, self.kv_heads * self.head_dim
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, self.intermediate), "up_proj": (h, self.intermediate), "down_proj": (self.intermediate, h)}

    @property
    def params(self) -> int:
        per_layer = sum(i * o for i, o in self.projections().values()) + 2 * self.hidden  # + two RMS norms
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return embeddings + self.layers * per_layer + self.hidden  # + the final norm

    def lora_params(self, rank: int, targets: tuple[str, ...] = LORA_TARGETS) -> int:
        """Trainable parameters of a rank-`rank` adapter: r·(in + out) per targeted map."""
        return self.layers * sum(rank * (i + o) for name, (i, o) in self.projections().items() if name in targets)


# Shapes of public models that docs/scale.md sizes without downloading them (their config.json).
KNOWN = {
    "meta-llama/Llama-3.1-8B-Instruct": Shape(4096, 32, 32, 8, 14336, 128256, False),
    "meta-llama/Llama-3.1-70B-Instruct": Shape(8192, 80, 64, 8, 28672, 128256, False),
}


def model_shape(source: str) -> Shape:
    """The shape of `default`, a model folder, or a known hub id (`KNOWN`)."""
    if source in KNOWN:
        return KNOWN[source]
    folder = Path(source).expanduser()
    if source == DEFAULT_NAME:
        folder = default_checkpoint_dir() if (default_checkpoint_dir() / "config.json").is_file() else ensure_default()
    path = folder / "config.json"
    if not path.is_file():
        raise ModelError(f"model '{source}': no config.json to read its shape from (name a model folder, default, or one of: {', '.join(KNOWN)})")
    config = json.loads(path.read_text(encoding="utf-8"))
    try:
        heads = int(config["num_attention_heads"])
        return Shape(int(config["hidden_size"]), int(config["num_hidden_layers"]), heads, int(config.get("num_key_value_heads") or heads),
                     int(config["intermediate_size"]), int(config["vocab_size"]), bool(config.get("tie_word_embeddings", False)))
    except KeyError as exc:
        raise ModelError(f"{path}: no {exc.args[0]} (estimate reads Llama-style configs)") from None
