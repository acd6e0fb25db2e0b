"""File names made from ids stay inside their folder, fit every file system and never collide,
whatever the id; a run with hostile request ids writes only inside its run folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearnkit.names import is_plain, safe_child, safe_name

HOSTILE_IDS = [
    "../../etc/passwd", "../escape", "/abs/path", "a/b", "a\\b", "..", ".", "...", "CON", "con.txt", "nul", "AUX", "Lpt1",
    "Ünïcödé", "日本語のリクエスト", "🙂", "a" * 300, "é" * 300, "r1", "R1", " leading space", "trailing.", "~tilde",
    "x~0123456789abcdef", "semi;colon|pipe*star?", "-starts-with-dash", "a" * 64, "a" * 65,
]
SAMPLES = 300  # generated id lists for the property below


def check_name(folder: Path, identifier: str) -> str:
    name = safe_name(identifier, ".jsonl")
    path = safe_child(folder, identifier, ".jsonl")
    assert path.parent == folder and path.name == name
    assert "/" not in name and "\\" not in name and "\0" not in name and name not in (".", "..")
    assert not name.startswith((".", "-")) and len(name.encode("utf-8")) <= 100
    assert name.isascii() and name == name.lower()
    return name


def test_hostile_ids_give_distinct_names_inside_the_folder(tmp_path: Path) -> None:
    names = [check_name(tmp_path, i) for i in HOSTILE_IDS]
    assert len(set(names)) == len(HOSTILE_IDS)  # collision-free, case-insensitively too (all lower case)
    assert safe_name("r1") == "r1" and safe_name("lm-birth", ".jsonl") == "lm-birth.jsonl"  # usual ids stay readable
    assert not is_plain("R1") and not is_plain("con") and not is_plain("a" * 65) and not is_plain("trailing.")
    assert safe_name("../../etc/passwd").startswith("etc_passwd~")


@settings(max_examples=SAMPLES, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=320), min_size=1, max_size=8, unique=True))
def test_any_ids_give_distinct_names_inside_the_folder(ids: list[str]) -> None:
    folder = Path("/run/requests")
    names = [check_name(folder, i) for i in ids]
    assert len(set(names)) == len(ids)


def test_a_run_with_hostile_request_ids_writes_only_in_its_folder(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The request copy of `../../etc/passwd` used to land outside the run folder."""
    from unlearnkit.engine.ledger import Ledger
    from unlearnkit.engine.runner import open_run, request_copy
    from unlearnkit.data.loaders import load_requests
    from unlearnkit.plan import load_plan

    root = tmp_path / "root"
    (root / "inputs").mkdir(parents=True)
    rows = [{"id": rid, "records": [{"question": f"Q{n}?", "answer": f"A{n}."}]} for n, rid in enumerate(HOSTILE_IDS)]
    requests = root / "inputs" / "requests.jsonl"
    requests.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plan = root / "inputs" / "plan.yaml"
    plan.write_text(f"model: {tiny_model_dir}\nmethod: ga\nrequests: [requests.jsonl]\noutput: ../run\n")
    before = {p for p in tmp_path.rglob("*")}
    run = open_run(load_plan(plan))
    run.ledger.close()
    written = {p for p in tmp_path.rglob("*")} - before
    folder = (root / "run").resolve()
    assert written and all(p.resolve().is_relative_to(folder) for p in written), sorted(map(str, written))
    copies = sorted((folder / "requests").iterdir())
    assert len(copies) == len(HOSTILE_IDS)
    for rid in HOSTILE_IDS:  # each copy holds its request under the real id
        (loaded,) = load_requests(request_copy(folder, rid))
        assert loaded.id == rid
    ledger = Ledger(folder / "ledger.sqlite")
    assert [r["id"] for r in ledger.requests()] == HOSTILE_IDS  # the ledger keeps the real ids
    ledger.close()


@pytest.mark.parametrize(("rid", "problem"), [("bad\u0000id", "control character U+0000"), ("tab\there", "control character U+0009"), ("x" * 1025, "1025 characters")])
def test_unprintable_or_huge_ids_are_one_line(tmp_path: Path, rid: str, problem: str) -> None:
    from unlearnkit.data.loaders import load_requests
    from unlearnkit.errors import DataError

    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"id": rid, "records": [{"question": "Q?", "answer": "A."}]}) + "\n")
    with pytest.raises(DataError, match=rf"r\.jsonl line 1.*field 'id':.*{re.escape(problem)}") as info:
        load_requests(path)
    assert "\n" not in str(info.value) and "\0" not in str(info.value)
