"""SIGINT and SIGTERM, as real signals to a real `unlearnkit` process: it stops at a safe point,
leaves no temporary output, prints one line, exits 130 / 143, and `run` then resumes to the
same weights as a run never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sequential_helpers import learned_model_dir, write_data
from unlearnkit.engine.ledger import Ledger

SRC = Path(__file__).resolve().parents[1] / "src"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
METHOD = "{name: ga, settings: {max_steps: 3, lr: 1.0e-4}}"
TEMPORARY = (".tmp-", ".partial", ".old-")  # every name a temporary write goes through


def env(crash: str | None = None) -> dict[str, str]:
    values = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "UNLEARNKIT_PROGRESS": "0",
              "TRANSFORMERS_VERBOSITY": "error", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    values.pop("UNLEARNKIT_CRASH_AT", None)
    if crash:
        values["UNLEARNKIT_CRASH_AT"] = crash
    return values


def unlearnkit(*args: str, crash: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "unlearnkit", *args], env=env(crash), capture_output=True, text=True, timeout=600)


def write_plan(folder: Path) -> Path:
    write_data(folder, 2)
    plan = folder / "plan.yaml"
    plan.write_text(f"model: {learned_model_dir()}\nmethod: {METHOD}\nrequests: [requests.jsonl]\nretain: [retain.jsonl]\n"
                    "evaluation: {suite: quick, per_set: 2}\noutput: run\nseed: 5\nguard: {enabled: false}\n")
    return plan


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if any(mark in p.name for mark in TEMPORARY))


def last_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "step-002" / "model.safetensors")


def assert_stopped(done: subprocess.CompletedProcess[str] | tuple[int, str], code: int, name: str) -> None:
    returncode, stderr = (done.returncode, done.stderr) if isinstance(done, subprocess.CompletedProcess) else done
    assert returncode == code, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if "interrupted" in line]
    assert lines == [stderr.strip().splitlines()[-1]] and lines[0].startswith(f"interrupted by {name}")
    assert "Traceback" not in stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("uninterrupted")
    done = unlearnkit("run", str(write_plan(folder)))
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "run"


def resume_and_compare(plan: Path, reference: Path) -> None:
    done = unlearnkit("run", str(plan))
    assert done.returncode == 0, done.stderr[-3000:]
    run = plan.parent / "run"
    ledger = Ledger(run / "ledger.sqlite")
    assert ledger.check() == [] and [s.step for s in ledger.steps()] == [1, 2]
    ledger.close()
    got, want = last_weights(run), last_weights(reference)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)


def test_signals_inside_a_step_stop_cleanly_and_the_run_resumes(tmp_path: Path, reference: Path) -> None:
    """The process sends itself the signal at a named point: SIGINT while step 2's checkpoint
    files are written but not renamed; then, rerun, SIGTERM inside step 2's training."""
    plan = write_plan(tmp_path)
    run = tmp_path / "run"
    for crash, code, name in (("checkpoint:2:INT", 130, "SIGINT"), ("train:2:TERM", 143, "SIGTERM")):
        done = unlearnkit("run", str(plan), crash=crash)
        assert_stopped(done, code, name)
        assert leftovers(run) == []  # the checkpoint's temporary folder went with the stop
        ledger = Ledger(run / "ledger.sqlite")
        assert ledger.check() == [] and [s.step for s in ledger.steps()] == [1]
        ledger.close()
    resume_and_compare(plan, reference)


def test_sigterm_from_outside_during_a_run(tmp_path: Path) -> None:
    """Another process sends SIGTERM once step 2 has started (what a scheduler or `kill` does);
    resuming after it is the test above."""
    plan = write_plan(tmp_path)
    process = subprocess.Popen([sys.executable, "-m", "unlearnkit", "run", str(plan)], env=env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    seen = []
    for line in process.stderr:  # the runner's progress lines go to stderr
        seen.append(line)
        if line.startswith("step 2 "):
            process.send_signal(signal.SIGTERM)
            break
    rest = process.stderr.read()
    process.wait(timeout=300)
    assert_stopped((process.returncode, "".join(seen) + rest), 143, "SIGTERM")
    assert leftovers(tmp_path / "run") == []
    ledger = Ledger(tmp_path / "run" / "ledger.sqlite")
    assert ledger.check() == [] and [s.step for s in ledger.steps()] in ([1], [1, 2])  # step 2 whole or not at all
    ledger.close()


def test_a_signal_before_the_first_step_leaves_no_run_folder(tmp_path: Path) -> None:
    plan = write_plan(tmp_path)
    done = unlearnkit("run", str(plan), crash="train:1:INT")
    assert_stopped(done, 130, "SIGINT")
    assert not (tmp_path / "run").exists()  # created by this start, nothing committed: removed


@pytest.mark.parametrize(("kind", "code"), [("INT", 130)])  # SIGTERM takes the same path (the run tests above send it)
def test_a_signal_while_unlearn_saves_leaves_nothing(tmp_path: Path, tiny_model_dir: Path, kind: str, code: int) -> None:
    """Ctrl-C while the model is written used to leave a half-written model of full size."""
    out = tmp_path / "unlearned"
    args = ("unlearn", "--model", str(tiny_model_dir), "--forget", str(EXAMPLES / "requests.jsonl"), "--request", "req-privacy-1",
            "--out", str(out), "--no-guard", "--method", "ga", "--set", "max_steps=1", "--device", "cpu")
    done = unlearnkit(*args, crash=f"save:1:{kind}")
    assert_stopped(done, code, f"SIG{kind}")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the model nor its temporary folder


def test_deferred_holds_a_signal_until_the_block_ends() -> None:
    from unlearnkit.signals import Interrupted, deferred, handling_signals

    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN when started in the background (`cmd &`)
    order = []
    with pytest.raises(Interrupted) as info, handling_signals():
        with deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            order.append("block finished")
        order.append("after the block")  # never reached: the held signal is raised on exit
    assert order == ["block finished"] and info.value.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is before  # the previous handler is back
