"""File names made from ids (request, record, run): safe, bounded and collision-free.

An id is whatever a user or a submitter wrote: `../../etc/passwd`, a NUL byte, `CON`, three
hundred characters, `Ünïcode`. A name on disk made from it must stay one plain entry inside
the folder it is joined to, fit every file system, and never be the name of another id. The
real id is kept where it belongs (the ledger, the file's content); the name is only a handle.

`safe_name(id)`:
- an id that is already a safe name (lower-case ASCII letters and digits, then also `.`, `_`,
  `-`; at most 64 characters; not a reserved device name such as `con` or `nul`; not ending in
  `.`) is its own name, so the usual ids (`r1`, `lm-birth`) keep their readable files;
- any other id becomes a readable lower-case ASCII prefix of it (at most 48 characters), `~`,
  and 16 hex digits of the SHA-256 of the exact id. `~` never occurs in the first form, so the
  two forms cannot meet; within the second, two ids share a name only if their hashes agree in
  64 bits. Lower case throughout means that a case-insensitive file system cannot merge two
  names either.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

PLAIN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
PREFIX_CHARS = 48
HASH_DIGITS = 16
# Device names that Windows reserves with any extension (and `.`/`..` are not plain anyway).
RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def is_plain(identifier: str) -> bool:
    """Whether an id is its own file name (see the module docstring)."""
    return bool(PLAIN.match(identifier)) and not identifier.endswith(".") and identifier.split(".")[0] not in RESERVED


def safe_name(identifier: str, suffix: str = "") -> str:
    """The file name for an id (plus `suffix`, such as `.jsonl`)."""
    if is_plain(identifier):
        return identifier + suffix
    ascii_text = unicodedata.normalize("NFKD", identifier).encode("ascii", "ignore").decode("ascii").lower()
    prefix = re.sub(r"[^a-z0-9._-]+", "_", ascii_text)[:PREFIX_CHARS].strip("._-") or "id"
    digest = hashlib.sha256(identifier.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_DIGITS]
    return f"{prefix}~{digest}{suffix}"


def safe_child(folder: Path, identifier: str, suffix: str = "") -> Path:
    """`folder / safe_name(identifier, suffix)`: always a direct child of `folder`."""
    return folder / safe_name(identifier, suffix)
