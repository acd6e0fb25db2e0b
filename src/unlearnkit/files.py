"""How unlearnkit writes a file or a folder: atomically, the one place that decides it.

Everything is first written under a temporary sibling name (`.<name>.tmp-<pid>`), flushed to
disk, and only then renamed over the final name, so a reader (or a resumed run) sees either the
old content or the whole new one, never half of it. A failure or a signal (KeyboardInterrupt,
SystemExit) inside the write removes the temporary sibling, so nothing half-written is left
behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temporary_sibling(path: Path, suffix: str | None = None) -> Path:
    """The temporary name a write of `path` goes through (per process, so two never collide)."""
    return path.with_name(path.name + suffix) if suffix else path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a handle whose content appears at `path` only when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        with tmp.open(mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write text atomically; returns the path."""
    with atomic_file(path) as handle:
        handle.write(text)
    return Path(path)


def write_json(path: str | Path, payload: Any, *, indent: int = 2, sort_keys: bool = False) -> Path:
    """Write JSON atomically (values JSON cannot hold, such as paths and dates, as strings)."""
    return write_text(path, json.dumps(payload, indent=indent, sort_keys=sort_keys, default=str) + "\n")


@contextmanager
def atomic_dir(out: str | Path, *, suffix: str | None = None, before_rename: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield a fresh temporary folder; when the block succeeds, its files are flushed and it is
    renamed over `out` (an existing `out` is replaced). On any failure it is removed.

    `suffix` names the temporary folder `<out><suffix>` instead of the per-process default (the
    checkpoints use `.partial`, which a resumed run recognises and removes). `before_rename`
    runs after the flush, just before the rename (the crash tests' hook).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(out, suffix)
    remove_path(tmp)
    tmp.mkdir()
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                fsync_path(file)
        fsync_path(tmp)
        if before_rename is not None:
            before_rename()
        if out.exists():
            old = temporary_sibling(out, ".old")
            remove_path(old)
            out.replace(old)
            tmp.replace(out)
            remove_path(old)
        else:
            tmp.replace(out)
        fsync_path(out.parent)
    except BaseException:
        remove_path(tmp)
        raise
