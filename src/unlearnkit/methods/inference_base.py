"""The base of inference-time methods: a Subject that wraps another Subject.

A `WrappedSubject` keeps the weights of the Subject it wraps (`inner`) and changes only what the
two verbs do, so every metric and attack runs on it unchanged. Wrappers stack: a guard on top of
an in-context wrapper on top of a logit offset on top of an NPO-trained model.

The attributes that weight-level code uses (`model`, `tokenizer`, `fmt`, ...) are those of the
innermost plain Subject, so a weight-based method stacked on a wrapper trains the real weights,
and `with_model` (used by the quantize attack and by LoRA merging) swaps the weights at the
bottom of the stack and keeps every wrapper above them.

Saving: `save(out_dir)` writes `wrapper.json` (the wrapper's kind and settings), the wrapper's
own files, and the wrapped Subject under `inner/` (recursively; a plain Subject as a model
folder). `load_subject(dir)` reads either form back.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from unlearnkit.data.formatting import PromptFormat
from unlearnkit.models.subject import GenerationSettings, ScoreResult, Subject

MANIFEST = "wrapper.json"
PLAIN_MANIFEST = "unlearnkit_subject.json"
W = TypeVar("W", bound="WrappedSubject")

# kind name -> class, filled by `register_wrapper` so that `load_subject` can rebuild any wrapper.
WRAPPERS: dict[str, type[WrappedSubject]] = {}


def register_wrapper(kind: str) -> Callable[[type[W]], type[W]]:
    def decorate(cls: type[W]) -> type[W]:
        cls.kind = kind
        WRAPPERS[kind] = cls
        return cls

    return decorate


class WrappedSubject(Subject):
    """A Subject whose verbs are changed by an inference-time method; weights live in `inner`."""

    kind: ClassVar[str] = "wrapper"

    def __init__(self, inner: Subject, name: str | None = None) -> None:
        # Subject.__init__ is not called on purpose: model, tokenizer and format are the inner's.
        self.inner = inner
        self.name = name or f"{self.kind}({inner.name})"

    # -- the weight-level attributes are the inner Subject's ----------------------------------
    @property
    def model(self) -> Any:  # type: ignore[override]
        return self.inner.model

    @model.setter
    def model(self, value: Any) -> None:
        self.inner.model = value

    @property
    def tokenizer(self) -> Any:  # type: ignore[override]
        return self.inner.tokenizer

    @tokenizer.setter
    def tokenizer(self, value: Any) -> None:
        self.inner.tokenizer = value

    @property
    def fmt(self) -> PromptFormat:  # type: ignore[override]
        return self.inner.fmt

    @fmt.setter
    def fmt(self, value: PromptFormat) -> None:
        self.inner.fmt = value

    @property
    def batch_size(self) -> int:  # type: ignore[override]
        return self.inner.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.inner.batch_size = value

    @property
    def max_length(self) -> int:  # type: ignore[override]
        return self.inner.max_length

    @max_length.setter
    def max_length(self, value: int) -> None:
        self.inner.max_length = value

    # -- stacking ------------------------------------------------------------------------------
    def rewrap(self, inner: Subject) -> WrappedSubject:
        """The same wrapper (sharing its state) around another inner Subject."""
        raise NotImplementedError

    def with_model(self, model: Any, name: str | None = None) -> Subject:
        """New weights at the bottom of the stack; every wrapper above them is kept."""
        return self.rewrap(self.inner.with_model(model, name))

    def clone(self) -> Subject:
        """Copies of the weights and of every wrapper's state: extending the clone leaves `self` as it was."""
        other = self.rewrap(self.inner.clone())
        other.own_state()
        return other

    def own_state(self) -> None:
        """Replace state shared with the wrapper this one was rewrapped from by copies (for `clone`)."""

    # -- the two verbs: by default unchanged (subclasses override) --------------------------
    def score(self, prompts: list[str], targets: list[str], **kwargs: Any) -> ScoreResult:  # type: ignore[override]
        return self.inner.score(prompts, targets, **kwargs)

    def generate(self, prompts: list[str], settings: GenerationSettings | None = None, **kwargs: Any) -> list[list[str]]:  # type: ignore[override]
        return self.inner.generate(prompts, settings, **kwargs)

    # -- saving --------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The wrapper's settings, written to `wrapper.json`."""
        return {}

    def save_files(self, folder: Path) -> None:
        """Write the wrapper's own state (index, helper models) into `folder`."""

    @classmethod
    def from_saved(cls, inner: Subject, folder: Path, config: dict[str, Any], device: str) -> WrappedSubject:
        raise NotImplementedError

    def save(self, out_dir: str | Path) -> Path:
        """Write the whole stack to `out_dir` (atomically: a temporary folder, then a rename)."""
        return save_subject(self, out_dir)


def layers(subject: Subject) -> Iterator[Subject]:
    """The stack from the top: each wrapper, then the plain Subject at the bottom."""
    while isinstance(subject, WrappedSubject):
        yield subject
        subject = subject.inner
    yield subject


def base_subject(subject: Subject) -> Subject:
    """The plain Subject at the bottom of a stack."""
    return list(layers(subject))[-1]


def find_wrapper(subject: Subject, cls: type[W]) -> W | None:
    """The topmost wrapper of type `cls` in the stack, if any (a later request extends it)."""
    for layer in layers(subject):
        if isinstance(layer, cls):
            return layer
    return None


def replace_base(subject: Subject, new_base: Subject) -> Subject:
    """The same stack of wrappers around another bottom Subject."""
    if not isinstance(subject, WrappedSubject):
        return new_base
    return subject.rewrap(replace_base(subject.inner, new_base))


# -- save / load -----------------------------------------------------------------------------------
def write_stack(subject: Subject, folder: Path) -> None:
    """Write a plain or wrapped Subject into `folder` (not atomic: callers rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(subject, WrappedSubject):
        manifest = {"kind": subject.kind, "name": subject.name, "config": subject.config()}
        subject.save_files(folder)
        write_stack(subject.inner, folder / "inner")
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        return
    subject.model.save_pretrained(folder, safe_serialization=True)
    subject.tokenizer.save_pretrained(folder)
    fmt = subject.fmt
    plain = {"name": subject.name, "format": {"name": fmt.name, "template": fmt.template, "system_prompt": fmt.system_prompt}}
    (folder / PLAIN_MANIFEST).write_text(json.dumps(plain, indent=2, ensure_ascii=False))


def save_subject(subject: Subject, out_dir: str | Path) -> Path:
    """Save a plain or wrapped Subject; nothing half-written is left at `out_dir`."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write_stack(subject, tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out


def load_subject(folder: str | Path, *, device: str = "auto", dtype: str = "auto") -> Subject:
    """Read back what `save_subject` wrote (a plain model folder loads as a plain Subject)."""
    path = Path(folder)
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        plain_path = path / PLAIN_MANIFEST
        plain = json.loads(plain_path.read_text()) if plain_path.exists() else {}
        subject = Subject.load(str(path), dtype=dtype, device=device)
        if "format" in plain:
            subject.fmt = PromptFormat(**plain["format"]).resolve(subject.tokenizer)
        subject.name = plain.get("name", subject.name)
        return subject
    manifest = json.loads(manifest_path.read_text())
    from unlearnkit.methods.base import METHODS

    METHODS.names()  # imports every method module, so that every wrapper kind is registered
    cls = WRAPPERS.get(manifest["kind"])
    if cls is None:
        from unlearnkit.errors import ModelError

        raise ModelError(f"{manifest_path}: unknown wrapper kind '{manifest['kind']}' (known: {', '.join(sorted(WRAPPERS))})")
    inner = load_subject(path / "inner", device=device, dtype=dtype)
    wrapper = cls.from_saved(inner, path, manifest.get("config", {}), device)
    wrapper.name = manifest.get("name", wrapper.name)
    return wrapper
