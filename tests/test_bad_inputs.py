"""Every case of issue 21, one by one: each bad input is one `error:` line, a non-zero exit, and
nothing written; outputs never replace what unlearnkit did not write; damaged ledgers say
what to do and can be rebuilt; a failed start leaves nothing that blocks the corrected rerun;
a 50 MB line is refused at once."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
import tracemalloc
from pathlib import Path

import pytest

from cli_helpers import invoke, tree
from sequential_helpers import learned_model_dir, write_data

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
QA = {"id": "q1", "question": "Where was Liora born?", "answer": "In Tarnholm."}


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def fails_cleanly(root: Path, *args: str, code: int | None = None, says: str = "") -> str:
    """Run the CLI; it must fail with one error line containing `says` and write nothing."""
    before = tree(root)
    outcome = invoke(*args)
    assert outcome.failed_cleanly(), (outcome.code, outcome.err)
    if code is not None:
        assert outcome.code == code, outcome.err
    assert says in outcome.error_lines[0], outcome.error_lines[0]
    assert tree(root) == before, sorted(tree(root) - before)
    return outcome.error_lines[0]


# -- options with typed bounds (exit 2, like every usage error) ------------------------------------
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["score", "--data", "d.jsonl", "--batch-size", "0"], "'--batch-size': 0 is out of bounds (use at least 1)"),
        (["generate", "--data", "d.jsonl", "--n", "0"], "'--n': 0 is out of bounds"),
        (["generate", "--data", "d.jsonl", "--top-p", "0"], "'--top-p': 0 is out of bounds (use (0, 1])"),
        (["generate", "--data", "d.jsonl", "--temperature", "nan"], "'--temperature': nan is not a finite number"),
        (["unlearn", "--out", "m", "--forget", "d.jsonl", "--lora-r", "0"], "'--lora-r': 0 is out of bounds"),
        (["eval", "--data", "d.jsonl", "--limit", "0"], "'--limit': 0 is out of bounds (use at least 1)"),
        (["world", "--out", "w", "--requests", "0"], "'--requests' / '-k': 0 is out of bounds"),
        (["world", "--out", "w", "--size", "huge"], "'--size': 'huge' is not one of"),
        (["prepare", "--world", "w", "--lr", "-1"], "'--lr': -1 is out of bounds"),
        (["score", "--data", "d.jsonl", "--device", "gpu"], "'--device': 'gpu' is not a device"),
        (["score", "--data", "d.jsonl", "--format", "no slot"], "'--format': prompt format 'no slot'"),
        (["score", "--data", "d.jsonl", "--batch-size", "many"], "'--batch-size'"),
        (["score", "--nonsense"], "No such option: --nonsense"),
    ],
)
def test_option_bounds(workdir: Path, args: list[str], says: str) -> None:
    fails_cleanly(workdir, *args, code=2, says=says)


# -- outputs: never on something unlearnkit did not write --------------------------------------------
def test_unlearn_out_on_a_file_of_yours_is_an_error(workdir: Path, tiny_model_dir: Path) -> None:
    """It used to rename the file to F.old and put a model folder in its place, exit 0."""
    mine = workdir / "F"
    mine.write_text("my notes")
    fails_cleanly(workdir, "unlearn", "--model", str(tiny_model_dir), "--forget", str(EXAMPLES / "requests.jsonl"),
                  "--out", "F", says="--out F: exists and is a file, not a folder unlearnkit wrote")
    assert mine.read_text() == "my notes"


def test_unlearn_out_on_a_folder_of_yours_is_an_error(workdir: Path, tiny_model_dir: Path) -> None:
    (workdir / "photos").mkdir()
    (workdir / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    fails_cleanly(workdir, "unlearn", "--model", str(tiny_model_dir), "--forget", str(EXAMPLES / "requests.jsonl"),
                  "--out", "photos", says="a folder that unlearnkit did not write")


def test_world_out_on_a_file_is_an_error(workdir: Path) -> None:
    (workdir / "w").write_text("x")
    fails_cleanly(workdir, "world", "--out", "w", "--size", "tiny", says="--out w: exists and is a file")


def test_world_replaces_a_world_it_wrote(workdir: Path) -> None:
    assert invoke("world", "--out", "w", "--size", "tiny", "--requests", "1").code == 0
    assert invoke("world", "--out", "w", "--size", "tiny", "--requests", "2").code == 0
    assert json.loads((workdir / "w" / "world.json").read_text())["num_requests"] == 2
    assert sorted(p.name for p in workdir.iterdir()) == ["w"]  # no temporary or .old sibling


@pytest.mark.parametrize(
    ("make", "json_out", "says"),
    [
        (lambda root: (root / "out.json").mkdir(), "out.json", "--json out.json: is a folder"),
        (lambda root: None, "out.txt", "--json out.txt: use a .json file name"),
        (lambda root: (root / "parent").write_text("x"), "parent/out.json", "parent is a file, not a folder"),
    ],
)
def test_json_output_checked_before_anything_runs(workdir: Path, tiny_model_dir: Path, make, json_out: str, says: str) -> None:
    make(workdir)
    fails_cleanly(workdir, "score", "--model", str(tiny_model_dir), "--data", str(EXAMPLES / "retain.jsonl"), "--json", json_out, says=says)


def test_json_output_may_not_be_an_input(workdir: Path, tiny_model_dir: Path) -> None:
    data = workdir / "data.json"
    data.write_text(json.dumps([QA]))
    fails_cleanly(workdir, "score", "--model", str(tiny_model_dir), "--data", "data.json", "--json", "data.json", says="is also an input")
    assert json.loads(data.read_text()) == [QA]


def test_corrupt_oracle_json_is_one_line(workdir: Path, tiny_model_dir: Path) -> None:
    (workdir / "oracle.json").write_text('{"suite": "quick", "rows": [')
    fails_cleanly(workdir, "eval", "--model", str(tiny_model_dir), "--data", f"retain={EXAMPLES / 'retain.jsonl'}", "--oracle", "oracle.json",
                  says="--oracle oracle.json: not a suite result written by `unlearnkit eval --json` (invalid JSON)")


# -- plans ------------------------------------------------------------------------------------------
@pytest.fixture()
def plan_folder(workdir: Path) -> Path:
    write_data(workdir, 2)
    return workdir


def plan_text(model: Path | str, extra: str = "", output: str = "run") -> str:
    return (f"model: {model}\nmethod: {{name: ga, settings: {{max_steps: 1, lr: 1.0e-4}}}}\nrequests: [requests.jsonl]\n"
            f"retain: [retain.jsonl]\nevaluation: {{suite: quick, per_set: 2}}\noutput: {output}\nguard: {{enabled: false}}\n{extra}")


def test_plan_whose_output_is_a_file(plan_folder: Path, tiny_model_dir: Path) -> None:
    (plan_folder / "run").write_text("not a folder")
    (plan_folder / "plan.yaml").write_text(plan_text(tiny_model_dir))
    fails_cleanly(plan_folder, "run", "plan.yaml", says="plan.yaml: output: ")


def test_plan_with_invalid_utf8(plan_folder: Path, tiny_model_dir: Path) -> None:
    (plan_folder / "plan.yaml").write_bytes(plan_text(tiny_model_dir).encode() + b"# caf\xe9\n")
    fails_cleanly(plan_folder, "run", "plan.yaml", says="plan.yaml line 8: not valid UTF-8")


def test_plan_alias_bomb_and_deep_nesting(plan_folder: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdef", "bcdefg"))
    (plan_folder / "bomb.yaml").write_text(bomb)
    fails_cleanly(plan_folder, "run", "bomb.yaml", says="once its aliases are expanded")
    (plan_folder / "deep.yaml").write_text("model: " + "[" * 5000 + "]" * 5000 + "\n")
    fails_cleanly(plan_folder, "run", "deep.yaml", says="deep.yaml")


# -- requests ---------------------------------------------------------------------------------------
def test_request_id_with_a_nul_byte(workdir: Path, tiny_model_dir: Path) -> None:
    (workdir / "r.jsonl").write_text(json.dumps({"id": "a\u0000b", "records": [QA]}) + "\n")
    fails_cleanly(workdir, "score", "--model", str(tiny_model_dir), "--data", "r.jsonl", says="r.jsonl line 1 (id 'a\\x00b'): field 'id': contains the control character U+0000")


def test_a_300_character_request_id_is_fine(workdir: Path, tiny_model_dir: Path) -> None:
    (workdir / "r.jsonl").write_text(json.dumps({"id": "x" * 300, "records": [QA]}) + "\n")
    outcome = invoke("score", "--model", str(tiny_model_dir), "--data", "r.jsonl", "--json", "s.json")
    assert outcome.code == 0, outcome.err


def test_an_over_long_record_names_file_line_and_id(workdir: Path, tiny_model_dir: Path) -> None:
    rows = [QA, {"id": "long-1", "question": "Tell me everything.", "answer": "word " * 300}]
    (workdir / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    line = fails_cleanly(workdir, "score", "--model", str(tiny_model_dir), "--data", "d.jsonl", "--json", "s.json")
    assert line.startswith("error: d.jsonl line 2 (id 'long-1'): ") and "over the model's context of 256" in line


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("[" * 100_000 + "\n", "d.jsonl line 1: unreadable JSON (maximum recursion depth exceeded"),
        ('{"id": "a", "question": "q", "answer_index": ' + "1" * 5000 + "}\n", "d.jsonl line 1: unreadable JSON (Exceeds the limit"),
        ('{"id": "a", "question": "\\ud800", "answer": "x"}\n', "d.jsonl line 1: a \\u escape makes a lone surrogate"),
    ],
    ids=["nesting 100000 deep", "a 5000-digit number", "a lone surrogate"],
)
def test_unreadable_json_is_one_line(workdir: Path, tiny_model_dir: Path, content: str, says: str) -> None:
    (workdir / "d.jsonl").write_text(content)
    fails_cleanly(workdir, "score", "--model", str(tiny_model_dir), "--data", "d.jsonl", says=says)


def test_a_fifo_is_not_read(workdir: Path, tiny_model_dir: Path) -> None:
    os.mkfifo(workdir / "d.jsonl")  # reading it would block for ever
    fails_cleanly(workdir, "score", "--model", str(tiny_model_dir), "--data", "d.jsonl", says="d.jsonl: not a regular file")


def write_huge_line(path: Path, megabytes: int = 50) -> None:
    with path.open("w") as handle:
        handle.write(json.dumps(QA) + "\n")
        handle.write('{"id": "huge-7", "question": "Q?", "answer": "' + "word " * (megabytes * 2**20 // 5) + '"}\n')


def test_a_50_mb_line_is_refused_at_once_with_bounded_memory(workdir: Path) -> None:
    """It used to take 7 GB and 40 s (tokenised whole before the length check)."""
    from unlearnkit.data.loaders import DEFAULT_MAX_RECORD_BYTES, load_records
    from unlearnkit.errors import DataError

    path = workdir / "big.jsonl"
    write_huge_line(path)
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(DataError) as info:
        load_records(path)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert str(info.value).startswith(f"{path} line 2 (id 'huge-7'): longer than the maximum record size")
    assert peak < 3 * DEFAULT_MAX_RECORD_BYTES  # the line is read no further than the limit
    assert seconds < 5  # generous for a loaded machine; docs/reliability.md has the measured figure


def test_a_50_mb_line_through_the_cli(workdir: Path, tiny_model_dir: Path) -> None:
    write_huge_line(workdir / "big.jsonl")
    fails_cleanly(workdir, "score", "--model", str(tiny_model_dir), "--data", "big.jsonl", says="big.jsonl line 2 (id 'huge-7'): longer than")


# -- model sources ----------------------------------------------------------------------------------
def test_a_mistyped_local_folder_fails_at_once(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (workdir / "runs").mkdir()
    (workdir / "d.jsonl").write_text(json.dumps(QA) + "\n")
    started = time.perf_counter()
    fails_cleanly(workdir, "score", "--model", "runs/one-reqest", "--data", "d.jsonl", says="model 'runs/one-reqest': no such folder in runs")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fails_cleanly(workdir, "score", "--model", "nobody/nothing", "--data", "d.jsonl", says="the hub cannot be reached")
    assert time.perf_counter() - started < 10  # it used to wait about 50 s on the network


def test_a_benchmark_without_a_hub_fails_at_once(workdir: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("unlearnkit.data.benchmarks.hub_reachable", lambda: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    started = time.perf_counter()
    fails_cleanly(workdir, "eval", "--model", str(tiny_model_dir), "--benchmark", "tofu:forget01", says="from the hub (it cannot be reached from here)")
    assert time.perf_counter() - started < 10  # datasets used to retry for about 30 s


# -- a failed start leaves nothing in the way -------------------------------------------------------
@pytest.mark.parametrize(
    ("break_it", "says"),
    [
        (lambda root: (root / "requests.jsonl").write_text(json.dumps({"id": "r1", "records": []}) + "\n"), "empty request"),
        (lambda root: shutil.copy(root / "requests.jsonl", root / "more.jsonl"), "appears twice"),
        (lambda root: None, "no such file or folder"),
    ],
    ids=["empty request", "duplicate ids across files", "missing model"],
)
def test_a_failed_validation_writes_no_run_folder_and_the_fix_runs(plan_folder: Path, break_it, says: str) -> None:
    model = learned_model_dir()
    original = (plan_folder / "requests.jsonl").read_text()
    break_it(plan_folder)
    text = plan_text("/no/such/model" if says.startswith("no such") else model)
    if says == "appears twice":
        text = text.replace("requests: [requests.jsonl]", "requests: [requests.jsonl, more.jsonl]")
    (plan_folder / "plan.yaml").write_text(text)
    fails_cleanly(plan_folder, "run", "plan.yaml", says=says)
    assert not (plan_folder / "run").exists()
    (plan_folder / "requests.jsonl").write_text(original)
    (plan_folder / "plan.yaml").write_text(plan_text(model))
    outcome = invoke("run", "plan.yaml")
    assert outcome.code == 0, outcome.err


def test_a_folder_left_by_a_failed_start_does_not_block_the_corrected_plan(plan_folder: Path, tiny_model_dir: Path) -> None:
    """An older unlearnkit (or a SIGKILL) left a ledger, a plan and a lock but no step."""
    from unlearnkit.engine.ledger import Ledger
    from unlearnkit.engine.runner import open_run
    from unlearnkit.plan import load_plan

    (plan_folder / "plan.yaml").write_text(plan_text(tiny_model_dir))
    open_run(load_plan(plan_folder / "plan.yaml")).ledger.close()
    (plan_folder / "run" / ".lock").write_text("12345")
    (plan_folder / "plan.yaml").write_text(plan_text(tiny_model_dir, extra="seed: 9\n"))  # the corrected plan
    run = open_run(load_plan(plan_folder / "plan.yaml"))
    assert json.loads(run.ledger.meta("plan") or "{}")["seed"] == 9
    run.ledger.close()
    ledger = Ledger(plan_folder / "run" / "ledger.sqlite")
    assert [r["id"] for r in ledger.requests()] == ["r1", "r2"] and ledger.check() == []
    ledger.close()


# -- damaged ledgers --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from unlearnkit.engine.runner import run_plan
    from unlearnkit.plan import load_plan

    folder = tmp_path_factory.mktemp("finished")
    write_data(folder, 2)
    (folder / "plan.yaml").write_text(plan_text(learned_model_dir(), extra="final: {report: false}\n"))
    return run_plan(load_plan(folder / "plan.yaml"))


def copy_run(finished: Path, to: Path) -> Path:
    run = to / "run"
    shutil.copytree(finished, run)
    return run


def test_a_garbage_ledger_says_what_to_do(workdir: Path, finished_run: Path) -> None:
    run = copy_run(finished_run, workdir)
    (run / "ledger.sqlite").write_bytes(b"this is not a database" * 100)
    for name in ("ledger.sqlite-wal", "ledger.sqlite-shm"):
        (run / name).unlink(missing_ok=True)
    line = fails_cleanly(workdir, "ledger", "run", says="the ledger is damaged (file is not a database)")
    assert "`unlearnkit ledger run --check`" in line and "--repair" in line
    fails_cleanly(workdir, "ledger", "run", "--check", says="1 problem(s); rebuild it")
    write_data(workdir, 2)
    (workdir / "plan.yaml").write_text(plan_text(learned_model_dir(), extra="final: {report: false}\n", output=str(run)))
    fails_cleanly(workdir, "run", "plan.yaml", says="the ledger is damaged")


def test_a_truncated_ledger_is_one_line_and_repair_rebuilds_it(workdir: Path, finished_run: Path) -> None:
    from unlearnkit.engine.ledger import Ledger

    run = copy_run(finished_run, workdir)
    original = Ledger(finished_run / "ledger.sqlite")
    want_steps = [(s.step, s.request_id, s.evaluated) for s in original.steps()]
    want_metrics = [tuple(r) for r in original.metrics()]
    want_requests = [(r["id"], r["sha256"], r["status"]) for r in original.requests()]
    original.close()
    ledger = run / "ledger.sqlite"
    db = sqlite3.connect(ledger)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = ledger.read_bytes()
    ledger.write_bytes(data[: len(data) // 2])
    fails_cleanly(workdir, "ledger", "run", says="the ledger is damaged")
    repaired = invoke("ledger", "run", "--repair")
    assert repaired.code == 0, repaired.err
    assert "rebuilt" in repaired.out and "the damaged ledger is kept as" in repaired.out
    kept = [p for p in run.iterdir() if p.name.startswith("ledger.damaged-") and p.suffix == ".sqlite"]
    assert len(kept) == 1 and kept[0].stat().st_size == len(data) // 2  # moved aside, never deleted
    rebuilt = Ledger(ledger)
    assert rebuilt.check() == []
    assert [(s.step, s.request_id, s.evaluated) for s in rebuilt.steps()] == want_steps
    assert [tuple(r) for r in rebuilt.metrics()] == want_metrics  # from results.json
    assert [(r["id"], r["sha256"], r["status"]) for r in rebuilt.requests()] == want_requests
    assert json.loads(rebuilt.meta("repaired") or "{}")["sources"]
    rebuilt.close()
    assert invoke("ledger", "run", "--check").code == 0


def test_repair_from_checkpoints_and_eval_files_alone(workdir: Path, finished_run: Path) -> None:
    """No readable ledger and no results.json: steps come from the checkpoints, metrics from eval/."""
    from unlearnkit.engine.ledger import Ledger

    run = copy_run(finished_run, workdir)
    (run / "results.json").unlink()
    (run / "ledger.sqlite").write_bytes(os.urandom(4096))
    for name in ("ledger.sqlite-wal", "ledger.sqlite-shm"):
        (run / name).unlink(missing_ok=True)
    assert invoke("ledger", "run", "--repair").code == 0
    rebuilt = Ledger(run / "ledger.sqlite")
    assert rebuilt.check() == []
    assert [(s.step, s.request_id, s.evaluated) for s in rebuilt.steps()] == [(1, "r1", True), (2, "r2", True)]
    assert rebuilt.metric(2, "r1", "probability") is not None
    rebuilt.close()
