"""The base of inference-time methods: a Subject that wraps another Subject.

A `WrappedSubject` keeps the weights of the Subject it wraps (`inner`) and changes only what the
two verbs do, so every metric and attack runs on it unchanged. Wrappers stack: a guard on top of
an in-context wrapper on top of a logit offset on top of an NPO-trained model.

The attributes that weight-level code uses (`model`, `tokenizer`, `fmt`, ...) are those of the
innermost plain Subject, so a weight-based method stacked on a wrapper trains the real weights,
and `with_model` (used by the quantize attack and by LoRA merging) swaps the weights at the
bottom of the stack and keeps every wrapper above them.

Saving: `save_subject(subject, dir)` writes `wrapper.json` (the wrapper's kind and settings),
the wrapper's own files, and the wrapped Subject under `inner/` (recursively; a plain Subject as
a model folder with its prompt format). `load_subject(source)` loads any subject: either form,
or any model source that `models.loading.load_model` takes. Everything that loads or saves a
Subject (commands, runner, checkpoints, prepare) goes through these two functions.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from unlearnkit.data.formatting import PromptFormat
from unlearnkit.errors import ModelError, UnlearnkitError
from unlearnkit.files import atomic_dir
from unlearnkit.models.loading import load_model
from unlearnkit.models.subject import GenerationSettings, ScoreResult, Subject
from unlearnkit.registry import Registry

MANIFEST = "wrapper.json"
PLAIN_MANIFEST = "unlearnkit_subject.json"
META_FILE = "unlearnkit.json"  # what made the model: a run's record, a prepared model's settings
MODEL_MARKERS = (PLAIN_MANIFEST, MANIFEST, META_FILE)  # a folder holding one of these is a model unlearnkit saved
W = TypeVar("W", bound="WrappedSubject")

# Wrapper kinds are registered by the inference-time methods that define them; the registry
# imports `unlearnkit.methods` by name on first use, so loading a saved stack finds every kind
# without this package importing the methods.
WRAPPERS: Registry[type[WrappedSubject]] = Registry("wrapper kind", "unlearnkit.methods")


def register_wrapper(kind: str) -> Callable[[type[W]], type[W]]:
    def decorate(cls: type[W]) -> type[W]:
        cls.kind = kind
        return WRAPPERS.register(kind)(cls)

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


# -- save / load: the one home for reading and writing any Subject -----------------------------
def write_stack(subject: Subject, folder: Path) -> None:
    """Write a plain or wrapped Subject into `folder` (not atomic: `save_subject` renames).

    A peft model is merged on a copy first, so the folder loads as a plain model and the caller
    keeps its adapter.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(subject, WrappedSubject):
        manifest = {"kind": subject.kind, "name": subject.name, "config": subject.config()}
        subject.save_files(folder)
        write_stack(subject.inner, folder / "inner")
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        return
    model = subject.model
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(folder, safe_serialization=True)
    subject.tokenizer.save_pretrained(folder)
    fmt = subject.fmt
    plain = {"name": subject.name, "format": {"name": fmt.name, "template": fmt.template, "system_prompt": fmt.system_prompt}}
    (folder / PLAIN_MANIFEST).write_text(json.dumps(plain, indent=2, ensure_ascii=False))


def save_subject(subject: Subject, out_dir: str | Path, *, meta: dict[str, Any] | None = None,
                 temporary_suffix: str | None = None, before_rename: Callable[[], None] | None = None) -> Path:
    """Save a plain or wrapped Subject atomically (files flushed, then one rename); `meta` goes
    into `unlearnkit.json` beside it. Nothing half-written is ever left at `out_dir`."""
    out = Path(out_dir)
    with atomic_dir(out, suffix=temporary_suffix, before_rename=before_rename, replaces=MODEL_MARKERS) as tmp:
        write_stack(subject, tmp)
        if meta is not None:
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    return out


def is_saved_stack(source: str | Path) -> bool:
    """Whether `source` is a folder holding a wrapped Subject (inference-time wrappers)."""
    return (Path(source) / MANIFEST).is_file()


def load_subject(source: str | Path, *, fmt: str | None = None, dtype: str = "auto", device: str = "auto",
                 batch_size: int | None = None, name: str | None = None, precision: str = "auto") -> Subject:
    """Load any subject: `default`, a model folder, a `.gguf` file, a hub id, or a folder that
    `save_subject` wrote (a plain model with its prompt format, or a stack of wrappers).

    The format saved with a model wins over `fmt` = None/"auto" (so a model unlearned in one
    format is measured in it); an explicit `fmt` wins over the saved one. `precision` is how
    it scores and generates (`models/precision.py`).
    """
    path = Path(source)
    if is_saved_stack(path):
        manifest = json.loads((path / MANIFEST).read_text())
        try:
            cls = WRAPPERS.get(manifest["kind"])
        except UnlearnkitError as exc:
            raise ModelError(f"{path / MANIFEST}: {exc}") from None
        inner = load_subject(path / "inner", fmt=fmt, dtype=dtype, device=device, batch_size=batch_size, precision=precision)
        wrapper = cls.from_saved(inner, path, manifest.get("config", {}), device)
        wrapper.name = name or manifest.get("name", wrapper.name)
        return wrapper
    model, tokenizer = load_model(str(source), dtype=dtype, device=device)
    chosen = PromptFormat.parse(fmt)
    plain_path = path / PLAIN_MANIFEST
    plain = json.loads(plain_path.read_text()) if plain_path.is_file() else {}
    if chosen.name == "auto" and "format" in plain:
        chosen = PromptFormat(**plain["format"])
    subject = Subject(model, tokenizer, chosen, name=name or plain.get("name", str(source)), precision=precision)
    if batch_size is not None:
        subject.batch_size = batch_size
    return subject
