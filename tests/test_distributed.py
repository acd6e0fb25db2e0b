"""Several processes give the result of one (docs/scale.md): the same plan on 1 and 2 CPU
processes (gloo, tiny model) ends with the same weights and metrics; rank 0 alone writes; a run
whose second rank is killed resumes; `prepare` trains the same target on 1 and 2 processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sequential_helpers import learned_model_dir, write_data
from unlearnkit.engine.ledger import Ledger

pytestmark = pytest.mark.slow

NPO = "{name: npo, settings: {lr: 2.0e-3, max_steps: 3, batch_size: 2, grad_accum: 2, alpha: 1.0}}"
SSU = "{name: ssu, settings: {lr: 5.0e-3, max_steps: 2, batch_size: 2, grad_accum: 2, lora_r: 4, lora_alpha: 8, lora_dropout: 0.1}}"


def write_plan(folder: Path, method: str, num_requests: int = 2, extra: str = "") -> Path:
    write_data(folder, num_requests)
    plan = folder / "plan.yaml"
    plan.write_text(f"model: {learned_model_dir()}\nmethod: {method}\nrequests: [requests.jsonl]\nretain: [retain.jsonl]\n"
                    f"evaluation: {{suite: quick, per_set: 2}}\noutput: run\nseed: 5\nfinal: {{report: false}}\nguard: {{enabled: false}}\n{extra}")
    return plan


def environment(**extra: str) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "UNLEARNKIT_PROGRESS": "0", "TRANSFORMERS_VERBOSITY": "error",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]), **extra}
    for key in ("UNLEARNKIT_CRASH_AT", "UNLEARNKIT_CRASH_RANK", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        if key not in extra:
            env.pop(key, None)
    return env


def unlearnkit(args: list[str], processes: int, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """`unlearnkit ARGS` on 1 process, or on N through torch.distributed.run (gloo on CPU)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else [sys.executable]
    return subprocess.run([*launcher, "-m", "unlearnkit", *args], cwd=cwd, env=environment(**extra), capture_output=True, text=True, timeout=900)


def run_on(folder: Path, method: str, processes: int, **extra: str) -> subprocess.CompletedProcess[str]:
    folder.mkdir(parents=True, exist_ok=True)
    plan = write_plan(folder, method)
    return unlearnkit(["run", str(plan)], processes, folder, **extra)


def weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / f"step-{step:03d}" / "model.safetensors")


def metrics(run: Path) -> dict[tuple[int, str, str], float | None]:
    ledger = Ledger(run / "ledger.sqlite")
    rows = {(r["step"], r["scope"], r["name"]): r["value"] for r in ledger.metrics()}
    ledger.close()
    return rows


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def assert_same_run(one: Path, two: Path, steps: int) -> None:
    start = load_file(learned_model_dir() / "model.safetensors")
    for step in range(1, steps + 1):
        assert max_difference(weights(one, step), start) > 1e-3  # it trained: equality below means something
        assert max_difference(weights(one, step), weights(two, step)) < 1e-5
    m1, m2 = metrics(one), metrics(two)
    assert m1.keys() == m2.keys() and m1
    for key, value in m1.items():
        assert (value is None) == (m2[key] is None), key
        if value is not None:
            assert abs(value - m2[key]) < 1e-4, (key, value, m2[key])


@pytest.mark.parametrize("method", [NPO, SSU], ids=["npo", "ssu"])
def test_two_processes_give_the_weights_and_metrics_of_one(tmp_path: Path, method: str) -> None:
    one, two = run_on(tmp_path / "one", method, 1), run_on(tmp_path / "two", method, 2)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    assert_same_run(tmp_path / "one" / "run", tmp_path / "two" / "run", steps=2)


def test_a_different_global_batch_is_a_different_run(tmp_path: Path) -> None:
    """The equality above can fail: the same comparison sees a changed global batch."""
    other = NPO.replace("grad_accum: 2", "grad_accum: 4")
    assert run_on(tmp_path / "a", NPO, 1).returncode == 0
    assert run_on(tmp_path / "b", other, 1).returncode == 0
    assert max_difference(weights(tmp_path / "a" / "run", 1), weights(tmp_path / "b" / "run", 1)) > 1e-5
