"""A submitted body to a `ForgetRequest`, or one clear line saying why not.

Bytes that are not UTF-8 JSON are a `BadBody` (HTTP 400). JSON that is not a valid request is an
`InvalidRequest` (HTTP 422): the request schema's own messages (the loaders' `parse_request`, so
the line reads as it would for a file), plus the service's limits, which a file on the
operator's disk does not need: an id that is safe as a file name, nesting depth, characters per
text, records per request, no NUL characters or lone surrogates (they cannot be stored as UTF-8).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from unlearnkit.data.loaders import parse_request
from unlearnkit.data.schema import ForgetRequest
from unlearnkit.errors import DataError, UnlearnkitError
from unlearnkit.plan import ServiceSpec

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_DEPTH = 16
MAX_KEY_CHARS = 128
WHERE = "request body"


class BadBody(UnlearnkitError):
    """Not UTF-8 JSON (HTTP 400)."""


class InvalidRequest(UnlearnkitError):
    """JSON that is not an acceptable forget request (HTTP 422)."""


@dataclass(frozen=True)
class Submission:
    request: ForgetRequest
    body_sha256: str  # of the bytes received: an Idempotency-Key retry must send the same


def read_json(raw: bytes) -> Any:
    """Parse a body as strict JSON (UTF-8; no NaN or Infinity)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadBody(f"{WHERE}: not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise BadBody(f"{WHERE}: empty (send a JSON object)")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise BadBody(f"{WHERE}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise BadBody(f"{WHERE}: JSON nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise BadBody(f"{WHERE}: invalid JSON ({name} is not a JSON number)")


def parse_submission(raw: bytes, limits: ServiceSpec) -> Submission:
    """The forget request in a submitted body (an id is made up when the body has none)."""
    data = read_json(raw)
    if not isinstance(data, dict):
        raise InvalidRequest(f"{WHERE}: expected a JSON object (a forget request), got {type(data).__name__}")
    check_values(data, limits.max_text_chars)
    if "id" not in data:
        data["id"] = f"req-{secrets.token_hex(8)}"
    where = f"{WHERE} (id '{data['id']}')" if isinstance(data["id"], str) and ID_PATTERN.match(data["id"]) else WHERE
    try:
        request = parse_request(data, where)
    except DataError as exc:
        raise InvalidRequest(str(exc)) from None
    if not ID_PATTERN.match(request.id):
        raise InvalidRequest(f"{WHERE}: field 'id': use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit")
    count = len(request.records) + len(request.probes)
    if count > limits.max_records:
        raise InvalidRequest(f"{where}: {count} records and probes, over the limit of {limits.max_records}")
    return Submission(request, hashlib.sha256(raw).hexdigest())


def check_values(data: Any, max_chars: int) -> None:
    """Depth, text length and storable characters of every value and key (iteratively, so a
    hostile nesting cannot exhaust the stack)."""
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    while stack:
        value, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidRequest(f"{WHERE}: field '{path.lstrip('.')}': nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(key, f"{path}.{key[:40]}" if len(key) > MAX_KEY_CHARS else f"{path}.{key}", MAX_KEY_CHARS, "key")
                stack.append((item, depth + 1, f"{path}.{key}"))
        elif isinstance(value, list):
            stack.extend((item, depth + 1, f"{path}[{i}]") for i, item in enumerate(value))
        elif isinstance(value, str):
            _check_text(value, path, max_chars, "text")


def _check_text(text: str, path: str, limit: int, what: str) -> None:
    field = path.lstrip(".") or "(top level)"
    if len(text) > limit:
        raise InvalidRequest(f"{WHERE}: field '{field}': a {what} of {len(text)} characters, over the limit of {limit}")
    if "\x00" in text:
        raise InvalidRequest(f"{WHERE}: field '{field}': contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{WHERE}: field '{field}': contains a lone surrogate (not storable as UTF-8)") from None
