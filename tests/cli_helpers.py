"""Run the real command line in this process (fast enough for hundreds of generated inputs)
and look at what it left: the exit code, stdout, stderr, and the files under a folder."""

from __future__ import annotations

import io
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from unittest import mock


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]

    def failed_cleanly(self) -> bool:
        """Non-zero exit, exactly one `error:` line, no traceback, and not an internal error."""
        return (self.code != 0 and len(self.error_lines) == 1 and "Traceback" not in self.err
                and "internal error" not in self.err)


def invoke(*args: str) -> Outcome:
    """`unlearnkit ARGS` through `cli.main`, the entry point users run."""
    from unlearnkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), mock.patch.object(sys, "argv", ["unlearnkit", *args]), \
            mock.patch.dict(os.environ, {"COLUMNS": "200", "UNLEARNKIT_PROGRESS": "0"}):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Outcome(code, out.getvalue(), err.getvalue())


def tree(root: Path) -> set[str]:
    """Every path under `root`, relative, hidden ones included."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}
