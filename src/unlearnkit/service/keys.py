"""API keys: how they look, how they are hashed, and the roles they carry.

A key is `uk_<id>_<secret>`: the id is public (it names the key in logs, the ledger and
`unlearnkit keys list`), the secret is 32 random bytes (URL-safe base64). Only the id, a random
salt and `scrypt(secret, salt)` are stored (the standard library's `hashlib.scrypt`, n=2^14,
r=8, p=1: about 16 MiB and tens of milliseconds per check, which is the point); the secret is
shown once, when the key is made, and never written or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal

Role = Literal["submitter", "operator", "auditor"]
ROLES: tuple[Role, ...] = ("submitter", "operator", "auditor")
KEY_PATTERN = re.compile(r"^uk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
SCRYPT_LABEL = "scrypt:n=16384,r=8,p=1,dklen=32"


@dataclass(frozen=True)
class NewKey:
    key_id: str
    secret: str
    salt: bytes
    digest: bytes

    @property
    def token(self) -> str:
        """The whole key, as the client sends it (shown once)."""
        return f"uk_{self.key_id}_{self.secret}"


def make_key() -> NewKey:
    key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_bytes(16)
    return NewKey(key_id, secret, salt, hash_secret(secret, salt))


def hash_secret(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode("ascii"), salt=salt, maxmem=64 * 1024 * 1024, **SCRYPT)


def split_key(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, else None."""
    match = KEY_PATTERN.match(token)
    return (match.group(1), match.group(2)) if match else None


def secret_matches(secret: str, salt: bytes, digest: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret, salt), digest)


def fingerprint(secret: str) -> str:
    """A fast digest of a verified secret, kept in memory only, so that scrypt runs once per key
    and process rather than once per request."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()
