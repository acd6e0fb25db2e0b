"""The sequential runner: kill-and-resume, ledger integrity, per-step evaluation, purge, relapse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from sequential_helpers import learned_model_dir, requests, write_data
from unlearnkit.engine.checkpoints import Checkpoints
from unlearnkit.engine.ledger import SCHEMA_VERSION, Ledger
from unlearnkit.engine.runner import relapses, run_plan
from unlearnkit.errors import UnlearnkitError
from unlearnkit.plan import RelapseSpec, load_plan

SSU = "{name: ssu, settings: {lr: 5.0e-3, epochs: 2, batch_size: 3, grad_accum: 1, lora_r: 4, lora_alpha: 8}}"
RUNNER = "import sys; from unlearnkit.plan import load_plan; from unlearnkit.engine.runner import run_plan; run_plan(load_plan(sys.argv[1]))"


def write_plan(folder: Path, *, method: str = SSU, keep: str = "all", extra: str = "", num_requests: int = 3) -> Path:
    write_data(folder, num_requests)
    plan = folder / "plan.yaml"
    plan.write_text(
        f"model: {learned_model_dir()}\nmethod: {method}\nrequests: [requests.jsonl]\nretain: [retain.jsonl]\n"
        f"evaluation: {{suite: quick, per_set: 2}}\noutput: run\nseed: 3\ncheckpoints: {{keep: '{keep}'}}\n{extra}"
    )
    return plan


def run_subprocess(plan: Path, crash: str | None = None) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "UNLEARNKIT_PROGRESS": "0", "TRANSFORMERS_VERBOSITY": "error"}
    env.pop("UNLEARNKIT_CRASH_AT", None)
    if crash:
        env["UNLEARNKIT_CRASH_AT"] = crash
    done = subprocess.run([sys.executable, "-c", RUNNER, str(plan)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, -9), done.stderr[-2000:]
    return done.returncode


def final_weights(run: Path, keep: str, step: int = 3) -> dict[str, torch.Tensor]:
    if keep == "deltas":
        return load_file(run / "checkpoints" / f"step-{step:03d}.delta.safetensors")
    return load_file(run / "checkpoints" / f"step-{step:03d}" / "model.safetensors")


def metric_rows(run: Path) -> list[tuple]:
    ledger = Ledger(run / "ledger.sqlite")
    rows = [(r["step"], r["scope"], r["name"], r["value"]) for r in ledger.metrics()]
    ledger.close()
    return rows


def assert_sound(run: Path, keep: str, num_steps: int = 3) -> Ledger:
    ledger = Ledger(run / "ledger.sqlite")
    assert ledger.check() == []
    steps = ledger.steps()
    assert [s.step for s in steps] == list(range(1, num_steps + 1))  # each step exactly once, in order
    assert [s.request_id for s in steps] == [f"r{i}" for i in range(1, num_steps + 1)]
    assert all(s.evaluated for s in steps)
    on_disk = Checkpoints(run / "checkpoints", keep).existing()
    kept = {s.step for s in steps if s.kept}
    assert set(on_disk) == kept  # the ledger and the checkpoint folder agree
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".partial")]
    return ledger


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Uninterrupted runs to compare resumed runs with, one per checkpoint policy."""
    runs = {}
    for keep in ("all", "deltas"):
        folder = tmp_path_factory.mktemp(f"reference-{keep.replace(':', '')}")
        assert run_subprocess(write_plan(folder, keep=keep)) == 0
        runs[keep] = folder / "run"
    return runs


@pytest.mark.parametrize(
    ("keep", "crashes"),
    [
        # Killed at every named point, one after another, in one run folder.
        ("all", ["train:1", "checkpoint:2", "ledger:2", "eval:2", "train:3", "purge:3"]),
        ("deltas", ["checkpoint:2", "eval:3"]),
    ],
)
def test_kill_and_resume(tmp_path: Path, reference: dict[str, Path], keep: str, crashes: list[str]) -> None:
    plan = write_plan(tmp_path, keep=keep)
    run = tmp_path / "run"
    for crash in crashes:
        assert run_subprocess(plan, crash) == -9, f"the run did not reach {crash}"
        ledger = Ledger(run / "ledger.sqlite")
        assert ledger.check() == []  # sound at every kill, not only at the end
        point, step = crash.split(":")
        done = [s.step for s in ledger.steps()]
        expected = int(step) if point in ("eval", "purge") else int(step) - 1
        assert done == list(range(1, expected + 1)), f"after a kill at {crash}"
        ledger.close()
    assert run_subprocess(plan) == 0
    assert_sound(run, keep).close()
    # The resumed run is the uninterrupted run: same weights, same metrics. (A delta restores
    # the weights to float rounding, base + (θ - base), so that policy compares with a tolerance.)
    got, want = final_weights(run, keep), final_weights(reference[keep], keep)
    assert got.keys() == want.keys()
    if keep == "all":
        assert all(torch.equal(got[k], want[k]) for k in got)
    else:
        assert all(torch.allclose(got[k], want[k], atol=1e-5) for k in got)
    got_rows, want_rows = metric_rows(run), metric_rows(reference[keep])
    assert [r[:3] for r in got_rows] == [r[:3] for r in want_rows]
    tolerance = 1e-9 if keep == "all" else 1e-3
    # A row without a value (a utility whose components did not all run) is None in both.
    assert [r[3] is None for r in got_rows] == [r[3] is None for r in want_rows]
    got_values, want_values = ([r[3] for r in rows if r[3] is not None] for rows in (got_rows, want_rows))
    assert got_values == pytest.approx(want_values, rel=tolerance, abs=tolerance, nan_ok=True)
    # Rerunning a finished run changes nothing.
    assert run_subprocess(plan) == 0
    assert len(Ledger(run / "ledger.sqlite").steps()) == 3


COALESCED = "coalesce: 2\nguard: {collateral: 0, general_probes: 0, max_new_tokens: 6}\n"


def test_kill_and_resume_is_exact_with_coalescing_and_the_rotation(tmp_path: Path) -> None:
    """Five requests, two per step (three steps), each step guarded and measuring a rotating
    sample of earlier requests: killed at several points, the resumed run is the uninterrupted one."""
    method = "{name: ga, settings: {max_steps: 2, lr: 1.0e-3, batch_size: 4}}"
    extra = COALESCED + "evaluation: {suite: quick, per_set: 2, earlier: 3}\n"
    reference = write_plan(tmp_path / "reference", method=method, extra=extra, num_requests=5)
    assert run_subprocess(reference) == 0
    plan = write_plan(tmp_path / "killed", method=method, extra=extra, num_requests=5)
    run = tmp_path / "killed" / "run"
    for crash in ["ledger:2", "eval:2", "train:3"]:
        assert run_subprocess(plan, crash) == -9, f"the run did not reach {crash}"
        ledger = Ledger(run / "ledger.sqlite")
        assert ledger.check() == []
        ledger.close()
    assert run_subprocess(plan) == 0
    ledger = Ledger(run / "ledger.sqlite")
    assert ledger.check() == [] and [s.request_id for s in ledger.steps()] == ["r1", "r3", "r5"]
    assert ledger.request_steps() == {"r1": 1, "r2": 1, "r3": 2, "r4": 2, "r5": 3}
    assert all(s.evaluated for s in ledger.steps()) and sorted(ledger.verdicts()) == [1, 2, 3]
    ledger.close()
    got, want = final_weights(run, "all"), final_weights(tmp_path / "reference" / "run", "all")
    assert all(torch.equal(got[k], want[k]) for k in got)
    got_rows, want_rows = metric_rows(run), metric_rows(tmp_path / "reference" / "run")
    assert [r[:3] for r in got_rows] == [r[:3] for r in want_rows]  # the rotation measured the same requests
    assert [r[3] for r in got_rows] == pytest.approx([r[3] for r in want_rows], nan_ok=True)


def test_three_step_run_evaluates_every_earlier_request(tmp_path: Path) -> None:
    # A training method from the registry stacked with a weight-arithmetic one.
    method = "[{name: ga, settings: {max_steps: 2, lr: 1.0e-4}}, {name: task_vector, settings: {lr: 1.0e-3, epochs: 3, batch_size: 3}}]"
    plan = write_plan(tmp_path, method=method, keep="last:1", extra="relapse: {threshold: 0.99}\n")
    torch.set_num_threads(1)
    run = run_plan(load_plan(plan))
    ledger = assert_sound(run, "last:1")
    steps = ledger.steps()
    assert [s.kept for s in steps] == [False, False, True]
    assert all(s.method == "ga+task_vector" and s.tokens > 0 and s.unlearn_s > 0 for s in steps)
    for step in (1, 2, 3):
        scopes = {row["scope"] for row in ledger.metrics(step) if row["name"] == "probability"}
        assert scopes == {f"r{i}" for i in range(1, step + 1)} | {"retain"}
        assert (run / "eval" / f"step-{step:03d}.json").exists()
    assert {row["scope"] for row in ledger.metrics(3)} >= {"r1", "r2", "r3", "retain", "utility"}
    assert [r["status"] for r in ledger.requests()] == ["verified"] * 3
    results = json.loads((run / "results.json").read_text())
    assert [s["step"] for s in results["steps"]] == [1, 2, 3]
    assert set(results["steps"][2]["metrics"]) >= {"r1", "r2", "r3", "retain"}
    # Every step was guarded: its verdict card is in the ledger and in results.json.
    cards = ledger.verdicts()
    assert sorted(cards) == [1, 2, 3] and [c["request"] for c in cards.values()] == ["r1", "r2", "r3"]
    assert all(s["verdict"]["verdict"] == cards[s["step"]]["verdict"] for s in results["steps"])
    assert all(c["before"]["retain_said"] is not None and c["probes"]["retain"] > 0 for c in cards.values())
    report = (run / "report.html").read_text()
    assert "<h2>Verdicts</h2>" in report and cards[1]["verdict"] in report
    # `unlearnkit ledger RUN` prints the history.
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    shown = CliRunner().invoke(app, ["ledger", str(run), "--long"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "ga+task_vector" in shown.output and "probability per scope" in shown.output and "ledger problem" not in shown.output
    missing = CliRunner().invoke(app, ["ledger", str(tmp_path / "nowhere")])
    assert missing.exit_code != 0


def test_purge_deletes_request_text_and_keeps_hash_and_metrics(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, method="{name: task_vector, settings: {max_steps: 1}}", extra="purge: true\nattacks: [quantize]\n", num_requests=2)
    torch.set_num_threads(1)
    run = run_plan(load_plan(plan))
    assert list((run / "requests").iterdir()) == []
    ledger = Ledger(run / "ledger.sqlite")
    for row, request in zip(ledger.requests(), requests(2)):
        assert row["status"] == "purged" and row["purged_at"]
        assert row["sha256"] == request.content_hash()
    assert ledger.metric(2, "r1", "probability") is not None
    attack_rows = {(row["scope"], row["name"]) for row in ledger.metrics(2) if row["name"].startswith("attack:quantize:")}
    assert {scope for scope, _ in attack_rows} == {"r1", "r2"}  # the attack ran on every request so far
    text = requests(1)[0].records[0].answer or ""
    for path in run.rglob("*"):  # nothing in the run folder holds the removed text any more
        if path.is_file() and path.suffix in (".jsonl", ".json", ".yaml"):
            assert text not in path.read_text(errors="ignore"), path


def test_changed_plan_or_request_is_refused_on_resume(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, method="{name: task_vector, settings: {max_steps: 1}}", num_requests=2)
    torch.set_num_threads(1)
    run_plan(load_plan(plan))
    plan.write_text(plan.read_text().replace("seed: 3", "seed: 4"))
    with pytest.raises(UnlearnkitError, match="plan changed"):
        run_plan(load_plan(plan))


# -- the ledger on its own ---------------------------------------------------------------------
def test_ledger_records_and_checks(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    reqs = requests(3)
    ledger.register_requests(reqs)
    ledger.register_requests(reqs)  # the same requests again: a no-op
    assert [r["id"] for r in ledger.requests()] == ["r1", "r2", "r3"]
    ledger.record_step(1, "r1", "ssu", "checkpoints/step-001", started_at="t", unlearn_s=1.0, checkpoint_s=0.5, tokens=10, train_steps=2)
    with pytest.raises(Exception):  # a step cannot be recorded twice
        ledger.record_step(1, "r1", "ssu", "x", started_at="t", unlearn_s=1.0, checkpoint_s=0.5, tokens=10, train_steps=2)
    assert ledger.steps()[0].evaluated is False
    ledger.record_evaluation(1, [("r1", "probability", 0.2), ("retain", "probability", 0.9)], 3.0)
    assert ledger.metric(1, "r1", "probability") == 0.2 and ledger.steps()[0].eval_s == 3.0
    assert ledger.check() == []
    with pytest.raises(RuntimeError), ledger.transaction():  # an aborted change leaves nothing
        ledger.db.execute("INSERT INTO metrics VALUES (1, 'r1', 'extra', 1.0)")
        raise RuntimeError
    assert ledger.metric(1, "r1", "extra") is None
    # Reordered or edited requests are refused.
    with pytest.raises(UnlearnkitError, match="was number 2"):
        ledger.register_requests([reqs[1], reqs[0], reqs[2]])
    edited = reqs[0].model_copy(update={"records": reqs[0].records[:1]})
    with pytest.raises(UnlearnkitError, match="changed"):
        ledger.register_requests([edited, *reqs[1:]])
    # A step applied out of order is reported.
    ledger.record_step(3, "r3", "ssu", "x", started_at="t", unlearn_s=1.0, checkpoint_s=0.5, tokens=10, train_steps=2)
    assert any("not 1..N" in p for p in ledger.check())
    ledger.close()
    # WAL mode, and the schema survives reopening.
    reopened = Ledger(tmp_path / "ledger.sqlite")
    assert reopened.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert len(reopened.steps()) == 2


def test_relapse_flags_a_request_whose_metric_came_back(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    reqs = requests(3)
    ledger.register_requests(reqs)
    for step, values in ((1, {"r1": 0.1}), (2, {"r1": 0.2, "r2": 0.6})):
        ledger.record_step(step, f"r{step}", "m", "c", started_at="t", unlearn_s=0, checkpoint_s=0, tokens=0, train_steps=0)
        ledger.record_evaluation(step, [(k, "probability", v) for k, v in values.items()], 0.0)
    run = SimpleNamespace(plan=SimpleNamespace(relapse=RelapseSpec(threshold=0.5)), requests=reqs, ledger=ledger)
    rows = [("r1", "probability", 0.7), ("r2", "probability", 0.9), ("r3", "probability", 0.1)]
    # r1 was forgotten at step 1 and is back; r2 never went under the threshold (not a relapse).
    assert relapses(run, 3, rows) == [("r1", "relapse", "probability", 0.7, 0.5)]  # type: ignore[arg-type]


def test_checkpoint_write_is_atomic(tmp_path: Path, tiny_subject) -> None:
    ckpt = Checkpoints(tmp_path / "checkpoints", "all")

    def die() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ckpt.write(1, tiny_subject, {"step": 1}, before_rename=die)
    assert ckpt.existing() == {}  # nothing half-written is visible
    assert not list(ckpt.root.iterdir())  # an interrupted write removes its own temporary folder
    # A SIGKILL cannot clean up: its leftovers (a partial write, a replaced folder's old copy) are
    # debris that the next start removes.
    (ckpt.root / "step-001.partial").mkdir()
    (ckpt.root / "step-002.old").mkdir()
    assert ckpt.existing() == {}
    assert sorted(p.name for p in ckpt.clean({1, 2})) == ["step-001.partial", "step-002.old"]
    assert not list(ckpt.root.iterdir())
    path = ckpt.write(1, tiny_subject, {"step": 1})
    assert (path / "model.safetensors").exists() and ckpt.existing() == {1: path}
    assert ckpt.clean(set()) == [path]  # no ledger row: an orphan


def test_delta_checkpoint_round_trip(tmp_path: Path, tiny_subject) -> None:
    subject = tiny_subject.clone()
    ckpt = Checkpoints(tmp_path / "checkpoints", "deltas")
    ckpt.set_base(subject.model)
    with torch.no_grad():
        for p in subject.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ckpt.write(1, subject, {"step": 1})
    restored = tiny_subject.clone()
    ckpt.apply_delta(1, restored.model)
    for (name, a), (_, b) in zip(subject.model.named_parameters(), restored.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_built_in_world_with_prepared_target_and_oracles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearnkit.benchmark.world import build_world

    monkeypatch.setenv("UNLEARNKIT_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    world = build_world(tmp_path / "world", seed=0, size="tiny", num_requests=2)
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"model: {learned_model_dir()}\nmethod: {{name: task_vector, settings: {{max_steps: 1}}}}\nrequests: [{{world: {world}}}]\n"
        "prepare: {train: {epochs: 1, lr: 1.0e-3, batch_size: 16}, oracles: all}\n"
        "evaluation: {suite: quick, per_set: 2}\noutput: run\ncheckpoints: {keep: deltas}\n"
    )
    run = run_plan(load_plan(plan))
    ledger = assert_sound(run, "deltas", num_steps=2)
    from safetensors import safe_open

    with safe_open(str(run / "checkpoints" / "step-001.delta.safetensors"), "pt") as delta:
        assert "prepared" in delta.metadata()["start_model"]  # the run started from the world's target
    for step in (1, 2):
        names = {(row["scope"], row["name"]) for row in ledger.metrics(step)}
        # the step's oracle is there: forget quality compares with it, for every request so far
        assert {(f"r{i}", "forget_quality") for i in range(1, step + 1)} <= names
        assert ("retain", "probability") in names and ("real_facts", "option_accuracy") in names
    plan_json = json.loads(ledger.meta("plan") or "{}")
    assert plan_json["prepare"]["oracles"] == "all"


def test_a_version_1_ledger_gains_the_verdicts_table(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    Ledger(path).close()
    import sqlite3

    db = sqlite3.connect(path)
    db.execute("DROP TABLE verdicts")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    ledger = Ledger(path)
    assert ledger.meta("schema_version") == str(SCHEMA_VERSION) and ledger.verdicts() == {}
    ledger.close()


def test_a_version_2_ledger_gains_the_step_of_each_request(tmp_path: Path) -> None:
    """Version 2 had no `requests.step`; before coalescing, step t applied position t."""
    import sqlite3

    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path)
    ledger.register_requests(requests(3))
    for step in (1, 2):
        ledger.record_step(step, f"r{step}", "m", "c", started_at="t", unlearn_s=0, checkpoint_s=0, tokens=0, train_steps=0)
    ledger.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE requests DROP COLUMN step")
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    ledger = Ledger(path)
    assert ledger.meta("schema_version") == str(SCHEMA_VERSION)
    assert ledger.request_steps() == {"r1": 1, "r2": 2} and ledger.check() == []
    ledger.close()


def test_a_coalesced_step_applies_consecutive_requests(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.register_requests(requests(4))
    ledger.record_step(1, "r1", "m", "c", started_at="t", unlearn_s=0, checkpoint_s=0, tokens=0, train_steps=0, coalesced=["r2", "r3"])
    assert ledger.request_steps() == {"r1": 1, "r2": 1, "r3": 1} and ledger.check() == []
    assert [r["status"] for r in ledger.requests()] == ["applied"] * 3 + ["pending"]
    # A step that skips a pending request is reported.
    ledger.record_step(2, "r4", "m", "c", started_at="t", unlearn_s=0, checkpoint_s=0, tokens=0, train_steps=0)
    ledger.db.execute("UPDATE requests SET step = NULL, status = 'pending' WHERE id = 'r3'")
    assert any("after a pending request" in p for p in ledger.check())
    ledger.close()


def test_requests_submitted_after_the_plan_own_are_appended_in_order(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    reqs = requests(3)
    ledger.register_requests(reqs[:1], submitted=True)
    seen = []
    assert ledger.append_request(reqs[1], also=lambda db, position: seen.append(position)) == 2
    assert ledger.append_request(reqs[2]) == 3 and seen == [2]
    ledger.register_requests(reqs[:1], submitted=True)  # a resumed service: the plan's own still match
    with pytest.raises(UnlearnkitError, match="in the ledger but not in the plan"):
        ledger.register_requests(reqs[:1])  # a plan without `submitted: true` does not own them
    with pytest.raises(Exception):  # an id is taken once
        ledger.append_request(reqs[2])
    assert [r["id"] for r in ledger.requests()] == ["r1", "r2", "r3"]
    ledger.close()
