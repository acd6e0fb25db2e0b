"""`unlearnkit estimate` against numbers worked out by hand for a tiny config (docs/scale.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from cli_helpers import invoke
from unlearnkit.methods.base import get_method
from unlearnkit.methods.footprint import footprint
from unlearnkit.models.shape import model_shape

TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128, "vocab_size": 400, "tie_word_embeddings": True}
# By hand: head_dim 16, k/v width 2·16 = 32. One layer: q 64·64 + k 64·32 + v 64·32 + o 64·64
# + gate, up, down 3·64·128 = 4096 + 2048 + 2048 + 4096 + 24576 = 36864, + 2 norms of 64 = 36992.
# Two layers 73984, + tied embeddings 400·64 = 25600, + final norm 64 = 99648.
PARAMS = 99648


@pytest.fixture()
def tiny_config(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    return tmp_path


def test_the_parameter_count_is_the_hand_count(tiny_config: Path) -> None:
    shape = model_shape(str(tiny_config))
    assert shape.params == PARAMS
    # LoRA r=2: 2·(in + out) per map: q 256, k 192, v 192, o 256, gate 384, up 384, down 384 = 2048 per layer
    assert shape.lora_params(2) == 2 * 2048


def test_the_parameter_count_matches_a_real_model(tiny_model_dir: Path) -> None:
    """The formula agrees with the tensors of a saved tiny Llama (the test fixture)."""
    with safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as f:
        stored = sum(f.get_slice(k).get_shape().numel() if hasattr(f.get_slice(k).get_shape(), "numel") else _numel(f.get_slice(k).get_shape()) for k in f.keys())
    assert model_shape(str(tiny_model_dir)).params == stored


def _numel(shape: list[int]) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


def test_memory_per_device_by_hand(tiny_config: Path) -> None:
    shape, npo, undial = model_shape(str(tiny_config)), get_method("npo", {"alpha": 0.0}), get_method("undial")
    ddp = footprint(shape, npo, config="ddp", processes=1, lora_rank=None, weight_bytes=2, seq_len=10, batch=2)
    assert ddp["weights"] == PARAMS * 2 == 199296
    assert ddp["gradients"] == 199296
    assert ddp["optimizer"] == PARAMS * 12  # two fp32 moments + an fp32 master copy of bf16 weights
    assert ddp["frozen reference"] == 0  # NPO caches reference log-probs only
    # 2 layers · 34 · b 2 · s 10 · h 64 · (2 bytes / 2) = 87040, + logits and their grad 8 · 2 · 10 · 400 = 64000
    assert ddp["activations"] == 87040 + 64000
    assert ddp["total"] == 199296 * 2 + PARAMS * 12 + 151040
    sharded = footprint(shape, undial, config="zero3", processes=2, lora_rank=None, weight_bytes=2, seq_len=10, batch=2)
    assert sharded["weights"] == PARAMS and sharded["optimizer"] == PARAMS * 6
    assert sharded["frozen reference"] == PARAMS * 2  # UNDIAL's teacher under ZeRO-3: a full copy per process
    fsdp = footprint(shape, undial, config="fsdp", processes=2, lora_rank=None, weight_bytes=2, seq_len=10, batch=2)
    assert fsdp["frozen reference"] == fsdp["weights"] == PARAMS  # under FSDP sharded like the weights
    lora = footprint(shape, undial, config="ddp", processes=2, lora_rank=2, weight_bytes=2, seq_len=10, batch=2)
    assert lora["gradients"] == 4096 * 2 and lora["frozen reference"] == 0  # the adapter switched off is the teacher
    offload = footprint(shape, npo, config="zero3-offload", processes=2, lora_rank=None, weight_bytes=2, seq_len=10, batch=2)
    assert offload["weights"] == 2 * 36992 * 2 and offload["optimizer"] == 0  # two layers in use, the rest on the CPU


def test_estimate_says_which_config_fits(tiny_config: Path) -> None:
    done = invoke("estimate", "--model", str(tiny_config), "--method", "npo", "--processes", "2", "--gpu-gb", "0.001")
    assert done.code == 0, done.err
    assert "ddp.yaml" in done.out and "fits in 90% of 0.001 GB:" in done.out
    too_small = invoke("estimate", "--model", str(tiny_config), "--method", "npo", "--gpu-gb", "0.000001")
    assert "none" in too_small.out.splitlines()[-1]


def test_a_folder_without_config_is_one_line(tmp_path: Path) -> None:
    assert invoke("estimate", "--model", str(tmp_path)).failed_cleanly()
