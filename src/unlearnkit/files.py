"""How unlearnkit writes a file or a folder: atomically, the one place that decides it.

Everything is first written under a temporary sibling name (`.<name>.tmp-<pid>`), flushed to
disk, and only then renamed over the final name, so a reader (or a resumed run) sees either the
old content or the whole new one, never half of it. A failure or a signal (`Interrupted`,
KeyboardInterrupt, SystemExit) inside the write removes the temporary sibling, so nothing
half-written is left behind.

What may be replaced is decided here too. A folder is replaced only when unlearnkit wrote it:
its writer names the marker files that prove it (a saved model's `unlearnkit_subject.json`, a
world's `world.json`, a run's `ledger.sqlite`), and a folder without one is never renamed,
emptied or replaced. A file output (`--json`, an HTML page) never lands on a folder or a
special file and must carry its suffix. Commands check their outputs with `check_output_folder`
and `check_output_file` before they load or write anything, so a wrong path is one error line
before any work; the writers check again, so no caller can skip it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from unlearnkit.errors import OutputError
from unlearnkit.signals import deferred

# Every marker file by which unlearnkit recognises a folder it wrote (each writer passes its own).
MARKERS = ("unlearnkit_subject.json", "wrapper.json", "unlearnkit.json", "world.json", "ledger.sqlite")


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


# -- what may be written where --------------------------------------------------------------
def is_marked(path: Path, markers: Iterable[str] = MARKERS) -> bool:
    """Whether `path` is a folder unlearnkit wrote (it holds one of the marker files)."""
    return path.is_dir() and any((path / name).is_file() for name in markers)


def _label(what: str | None, path: Path) -> str:
    return f"{what} {path}" if what else str(path)


def _check_parent(path: Path, what: str | None) -> None:
    """The nearest existing ancestor is a folder we may write in (mkdir would fail otherwise)."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():  # a dangling link
            raise OutputError(f"{_label(what, path)}: {parent} is a broken link")
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{_label(what, path)}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{_label(what, path)}: no permission to write in {parent}")


def _check_name(path: Path, what: str | None) -> None:
    text = str(path)
    if not text or "\0" in text or not path.name or path.name in (".", ".."):
        raise OutputError(f"{what or 'output'} {text!r}: not a usable path")


def check_output_folder(path: Path, markers: Sequence[str], what: str | None, *, beside_ours: bool = False) -> None:
    """`path` may become (or be replaced by) an output folder: it does not exist,
    is an empty folder, or is a folder that unlearnkit wrote (holding one of `markers`). With
    `beside_ours` (a run folder, which only ever adds files), also a folder that holds nothing
    but folders unlearnkit wrote (the demo writes its world there first)."""
    _check_name(path, what)
    if path.is_symlink() and not path.exists():
        raise OutputError(f"{_label(what, path)}: a broken link")
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"{_label(what, path)}: exists and is a file, not a folder unlearnkit wrote; choose another path")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"{_label(what, path)}: no permission to write in it")
        entries = list(path.iterdir())
        if beside_ours and all(is_marked(entry) for entry in entries):
            return
        if entries and not is_marked(path, markers):
            raise OutputError(f"{_label(what, path)}: a folder that unlearnkit did not write (it holds other files); choose a new or empty folder")
        return
    _check_parent(path, what)


def check_output_file(path: Path, what: str | None, *, suffixes: Sequence[str], inputs: Iterable[Path | str | None] = ()) -> None:
    """`path` may receive a file output: the right suffix, not a folder or a special file, not
    one of the command's `inputs`, and a parent we can create and write in. An existing file of
    that name is replaced atomically (its old content stays whole until the new is complete)."""
    _check_name(path, what)
    if path.suffix.lower() not in suffixes:
        raise OutputError(f"{_label(what, path)}: use a {' or '.join(suffixes)} file name")
    if path.is_symlink() and not path.exists():
        raise OutputError(f"{_label(what, path)}: a broken link")
    if path.exists():
        if path.is_dir():
            raise OutputError(f"{_label(what, path)}: is a folder; name a file")
        if not path.is_file():
            raise OutputError(f"{_label(what, path)}: not a regular file")
        for source in inputs:
            if source is not None and Path(source).exists() and path.samefile(source):
                raise OutputError(f"{_label(what, path)}: is also an input of this command; name another file")
    _check_parent(path, what)


def check_output_place(path: Path, what: str | None) -> None:
    """`path` is a folder that output files will be added to (it may hold other files, which
    stay): a folder or nothing yet, inside a folder we can write in."""
    _check_name(path, what)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise OutputError(f"{_label(what, path)}: exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"{_label(what, path)}: no permission to write in it")
        return
    _check_parent(path, what)


# -- writing --------------------------------------------------------------------------------
@contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a handle whose content appears at `path` only when the block ends without error."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; cannot write a file there")
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
def atomic_dir(out: str | Path, *, suffix: str | None = None, before_rename: Callable[[], None] | None = None,
               replaces: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a fresh temporary folder; when the block succeeds, its files are flushed and it is
    renamed over `out`. On any failure it is removed.

    An existing `out` is replaced only when it is an empty folder or holds one of the marker
    files `replaces` (a folder unlearnkit wrote); anything else is an `OutputError` before any
    work. `suffix` names the temporary folder `<out><suffix>` instead of the per-process default
    (the checkpoints use `.partial`, which a resumed run recognises and removes). `before_rename`
    runs after the flush, just before the rename (the crash tests' hook).
    """
    out = Path(out)
    if out.exists() or out.is_symlink():
        check_output_folder(out, replaces, None)
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
        with deferred():  # two renames replace an existing folder: never stop between them
            if out.exists():
                old = out.with_name(f".{out.name}.old-{os.getpid()}")
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
