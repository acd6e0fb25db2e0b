"""One exception type whose message is the single line a user sees.

The CLI catches `UnlearnkitError` and prints `error: <message>` with a non-zero exit, never a
traceback. Messages name what went wrong and where (file, record, field).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UnlearnkitError(Exception):
    """An error caused by the user's input or environment, reported as one line."""


class DataError(UnlearnkitError):
    """A malformed data file or record."""


class ModelError(UnlearnkitError):
    """A model that cannot be found or loaded."""


class TrainingError(UnlearnkitError):
    """A training step that diverged (NaN or infinite loss or weights)."""


class VerdictError(UnlearnkitError):
    """`--strict`: a request ended with a verdict other than `forgotten` (exit code 3)."""

    exit_code = 3


def printable(value: object, limit: int = 80) -> str:
    """User text as an error line shows it: control and line-break characters escaped (so the
    line stays one line), at most `limit` characters."""
    text = repr(str(value))[1:-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(text: str) -> str:
    """A message built from other text (a validator's, a library's) kept to one line."""
    return " ".join(text.splitlines())


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class OutputError(UnlearnkitError):
    """An output path unlearnkit must not write: a file where a folder goes, a folder it did
    not create, a name with the wrong suffix, a place it cannot write."""
