"""`python distributed_driver.py ARGS` = `unlearnkit ARGS`, recording what this process writes.

An audit hook (PEP 578) notes every file opened for writing and every rename, removal or new
folder; at exit the list goes to `$UNLEARNKIT_TEST_WRITES/rank-<RANK>.txt`, so a test can see
that only rank 0 wrote into the run folder."""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

WATCHED = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.replace", "shutil.rmtree"}
written: list[str] = []


def audit(event: str, args: tuple) -> None:
    if event == "open" and len(args) >= 2 and isinstance(args[1], str) and any(c in args[1] for c in "wax+"):
        written.append(str(args[0]))
    elif event in WATCHED and args:
        written.append(str(args[0]))


def dump() -> None:
    out = Path(os.environ["UNLEARNKIT_TEST_WRITES"]) / f"rank-{os.environ.get('RANK', '0')}.txt"
    with open(out, "w") as handle:  # written after the audit list is taken
        handle.write("\n".join(list(written)))


if os.environ.get("UNLEARNKIT_TEST_WRITES"):
    atexit.register(dump)
    sys.addaudithook(audit)

from unlearnkit.cli import main  # noqa: E402

sys.argv = ["unlearnkit", *sys.argv[1:]]
main()
