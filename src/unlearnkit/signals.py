"""SIGINT and SIGTERM: stop, clean up, exit 130 or 143. The one home of signal handling.

Inside `handling_signals()` (the CLI runs every command in it; `serve` and other long-lived
callers can too) either signal raises `Interrupted` in the main thread. `Interrupted` derives
from BaseException, not Exception, so no `except Exception` swallows it and no library turns
it into a normal return (typer turns a KeyboardInterrupt into exit code 130 that a
non-standalone caller never sees). Every temporary write (`files.atomic_file`,
`files.atomic_dir`, checkpoints) removes its temporary sibling on BaseException, so stopping
anywhere leaves nothing half-written, and a stopped `run` resumes as after a SIGKILL.

Safe points: a signal is acted on between two Python bytecodes, except inside `deferred()`,
where it is held until the block ends. Sequences that must not be cut in two (replacing an
existing folder takes two renames) run deferred. Once the first signal is raised, further
ones are ignored so that the cleanup finishes; SIGKILL still stops at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; `exit_code` is 128 + the signal number (130, 143)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


# Only the main thread runs signal handlers, and only it counts deferred blocks.
_deferred_depth = 0
_pending: int | None = None
_stopping = False


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _stopping:
        return  # already stopping: let the cleanup of the first signal finish
    if _deferred_depth:
        _pending = signum
        return
    _stop(signum)


def _stop(signum: int) -> None:
    global _stopping
    _stopping = True
    raise Interrupted(signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def handling_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` within the block; the previous handlers come back
    afterwards. A no-op outside the main thread (where Python allows no handler)."""
    global _stopping, _pending
    if not _in_main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in HANDLED}
    _stopping, _pending = False, None
    for signum in HANDLED:
        signal.signal(signum, _on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _stopping, _pending = False, None


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends (a sequence that must not be cut in two)."""
    global _deferred_depth, _pending
    if not _in_main_thread():
        yield
        return
    _deferred_depth += 1
    try:
        yield
    finally:
        _deferred_depth -= 1
        if _deferred_depth == 0 and _pending is not None and not _stopping:
            signum, _pending = _pending, None
            _stop(signum)
