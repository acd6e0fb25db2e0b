"""Name → class registries: adding a method (or metric, attack) is one file and one decorator.

A registry knows the package its entries live in and imports every module of that package the
first time it is asked for a name, so a new file is found without editing any list.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from unlearnkit.errors import UnlearnkitError, did_you_mean, one_line, printable

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = entry
            setattr(entry, "registry_name", name)
            return entry

        return decorate

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self.package}.{module.name}")

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise UnlearnkitError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self._entries)}; valid: {valid}"
            ) from None

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._entries.items())


class SettingError(UnlearnkitError):
    """A bad setting of a registered entry; `key` and `problem` let a plan name its own location."""

    def __init__(self, message: str, key: str, problem: str) -> None:
        super().__init__(message)
        self.key, self.problem = key, problem


def build_with_settings(cls: type[M], settings: dict[str, Any] | None, kind: str, noun: str) -> M:
    """`cls(**settings)` with one clear line for an unknown or invalid key, e.g.
    "method 'npo': unknown hyperparameter 'lrr' (did you mean 'lr'?); valid: ..."."""
    settings = dict(settings or {})
    fields = list(cls.model_fields)
    name = getattr(cls, "registry_name", cls.__name__)
    for key in settings:
        if key not in cls.model_fields:
            hint = did_you_mean(str(key), fields)
            shown = printable(key, 40)
            raise SettingError(f"{kind} '{name}': unknown {noun} '{shown}'{hint}; valid: {', '.join(fields) or 'none'}", shown, f"not a {noun} of '{name}'{hint}")
    try:
        return cls(**settings)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(printable(part, 40) for part in first["loc"])
        raise SettingError(f"{kind} '{name}': {noun} '{key}': {one_line(first['msg'])}", key, one_line(first["msg"])) from None
