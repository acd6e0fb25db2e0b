"""Who is calling: the API key of a request, its role, and its rate limit.

A key is sent as `Authorization: Bearer KEY`, as `X-API-Key: KEY`, or as the password of HTTP
Basic auth (what a browser sends for the status page). No key, a malformed, unknown or revoked
key is 401; a key whose role may not do what it asks is 403; over its rate limit, 429.

Roles (docs/service.md): a submitter submits requests and reads its own; an operator reads every
request, pauses and resumes the worker and retires guard entries; an auditor reads everything
and exports the ledger. Any key may ask for chat completions.
"""

from __future__ import annotations

import base64
import binascii
import math
import threading
import time
from dataclasses import dataclass

from unlearnkit.service.keys import Role, fingerprint, secret_matches, split_key
from unlearnkit.service.store import ServiceStore

READ_ALL: tuple[Role, ...] = ("operator", "auditor")


class ApiError(Exception):
    """An HTTP error answered as `{"error": message}`."""

    def __init__(self, status: int, message: str, headers: dict[str, str | list[str]] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass(frozen=True)
class Caller:
    key_id: str
    name: str
    role: Role

    def require(self, *roles: Role) -> Caller:
        if self.role not in roles:
            raise ApiError(403, f"key '{self.key_id}' has the {self.role} role; this needs {' or '.join(roles)}")
        return self

    @property
    def reads_all(self) -> bool:
        return self.role in READ_ALL


def token_from(headers: dict[str, str]) -> str | None:
    """The key in a request's headers (lower-case names), if any."""
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            _, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return password or None
    return headers.get("x-api-key") or None


# Sent as two WWW-Authenticate lines (a browser answers the Basic one with the URL's credentials).
CHALLENGE = {"WWW-Authenticate": ['Bearer realm="unlearnkit"', 'Basic realm="unlearnkit", charset="UTF-8"']}


class Authenticator:
    def __init__(self, store: ServiceStore, default_rate: float | None = None) -> None:
        self.store, self.default_rate = store, default_rate
        self._verified: dict[str, str] = {}  # key id -> fingerprint of the secret scrypt accepted (memory only)
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, time)
        self._lock = threading.Lock()

    def caller(self, token: str | None) -> Caller:
        if not token:
            raise ApiError(401, "no API key: send Authorization: Bearer KEY (keys are made with `unlearnkit keys add`)", CHALLENGE)
        parts = split_key(token)
        row = self.store.key(parts[0]) if parts else None
        if parts is None or row is None or row["revoked_at"] is not None:
            raise ApiError(401, "unknown or revoked API key", CHALLENGE)
        key_id, secret = parts
        if self._verified.get(key_id) != fingerprint(secret):
            if not secret_matches(secret, row["salt"], row["hash"]):
                raise ApiError(401, "unknown or revoked API key", CHALLENGE)
            self._verified[key_id] = fingerprint(secret)
        rate = row["rate_limit"] if row["rate_limit"] is not None else self.default_rate
        if rate is not None:
            self._spend(key_id, rate)
        return Caller(key_id, row["name"], row["role"])

    def _spend(self, key_id: str, per_minute: float) -> None:
        """A token bucket per key: `per_minute` tokens, refilled continuously."""
        refill = per_minute / 60.0
        with self._lock:
            now = time.monotonic()
            tokens, then = self._buckets.get(key_id, (per_minute, now))
            tokens = min(per_minute, tokens + (now - then) * refill)
            if tokens < 1:
                self._buckets[key_id] = (tokens, now)
                wait = math.ceil((1 - tokens) / refill)
                raise ApiError(429, f"key '{key_id}' is over its rate limit of {per_minute:g} requests per minute; retry in {wait} s",
                               {"Retry-After": str(wait)})
            self._buckets[key_id] = (tokens - 1, now)
