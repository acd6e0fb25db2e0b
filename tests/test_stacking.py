"""Weight-based and inference-time methods stacked in one run: the checkpoint keeps the whole
stack, a resumed or reloaded step still refuses, and `unlearn` saves a wrapper stack whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sequential_helpers import learned_model_dir, mean_prob, requests, write_data
from unlearnkit.engine.runner import load_step, open_run, run_plan
from unlearnkit.errors import UnlearnkitError
from unlearnkit.models.stack import MANIFEST, WrappedSubject
from unlearnkit.plan import load_plan


def plan_file(tmp_path: Path, keep: str = "all") -> Path:
    req, ret = write_data(tmp_path, 2)
    plan = {
        "model": str(learned_model_dir()),
        "method": [{"name": "ga", "settings": {"lr": 1e-3, "max_steps": 3}}, {"name": "guardrail", "settings": {"threshold": 0.8}}],
        "requests": [str(req)],
        "retain": [str(ret)],
        "evaluation": {"suite": "quick"},
        "output": str(tmp_path / "run"),
        "checkpoints": {"keep": keep},
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def test_stacked_run_checkpoints_the_wrapper(tmp_path: Path) -> None:
    plan = load_plan(plan_file(tmp_path))
    folder = run_plan(plan)
    assert (folder / "checkpoints" / "step-002" / MANIFEST).exists()
    subject = load_step(open_run(plan), 2)
    assert isinstance(subject, WrappedSubject)
    question = requests(2)[0].records[0].question
    assert subject.greedy([question], 12)[0].startswith("I'm sorry")
    # The weight method did its part too: the request is less likely under the bare weights.
    base = subject
    while isinstance(base, WrappedSubject):
        base = base.inner
    from unlearnkit.models.subject import Subject
    from unlearnkit.models.stack import load_subject

    learned = load_subject(learned_model_dir())
    assert mean_prob(base, requests(2)[0].records) < mean_prob(learned, requests(2)[0].records)


def test_deltas_cannot_hold_a_wrapper(tmp_path: Path) -> None:
    with pytest.raises(UnlearnkitError, match="cannot hold an inference-time wrapper"):
        run_plan(load_plan(plan_file(tmp_path, keep="deltas")))


def test_unlearn_command_saves_a_wrapper_stack(tmp_path: Path) -> None:
    req, ret = write_data(tmp_path, 1)
    out = tmp_path / "guarded"
    cmd = [sys.executable, "-m", "unlearnkit", "unlearn", "--model", str(learned_model_dir()), "--method", "guardrail",
           "--forget", str(req), "--retain", str(ret), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (out / MANIFEST).exists() and (out / "unlearnkit.json").exists()
    again = [sys.executable, "-m", "unlearnkit", "unlearn", "--model", str(out), "--method", "ga", "--set", "max_steps=1",
             "--forget", str(req), "--out", str(tmp_path / "stacked")]
    done = subprocess.run(again, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "stacked" / MANIFEST).exists()  # the guard stays on top of the new weights


INFERENCE_SETTINGS = {
    "guardrail": {"threshold": 0.8},
    "icul": {},
    "logit_offset": {"trainer": "ga", "trainer_settings": {"lr": 1e-3, "max_steps": 2}},
}


@pytest.mark.parametrize("name", sorted(INFERENCE_SETTINGS))
def test_each_inference_method_alone_from_a_plan_and_from_unlearn(tmp_path: Path, name: str) -> None:
    from unlearnkit.methods.base import METHODS

    settings = {k: v for k, v in INFERENCE_SETTINGS[name].items() if k in METHODS.get(name).model_fields}
    req, ret = write_data(tmp_path, 2)
    # Unguarded: the wrapper itself must land in the checkpoint. (ICUL's instructions cost the
    # tiny model more retain probability than the default budget allows; guarded, the step is
    # undone, which the last test of this file checks.)
    plan = {"model": str(learned_model_dir()), "method": {"name": name, "settings": settings}, "requests": [str(req)],
            "retain": [str(ret)], "evaluation": {"suite": "quick"}, "output": str(tmp_path / "run"), "guard": {"enabled": False}}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    loaded = load_plan(tmp_path / "plan.yaml")
    run_plan(loaded)
    assert isinstance(load_step(open_run(loaded), 2), WrappedSubject)
    out = tmp_path / "one"
    cmd = [sys.executable, "-m", "unlearnkit", "unlearn", "--model", str(learned_model_dir()), "--method", name,
           "--forget", str(req), "--request", "r1", "--retain", str(ret), "--out", str(out), "--no-guard"]
    cmd += [f"--set={k}={v}" for k, v in settings.items() if not isinstance(v, dict)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (out / MANIFEST).exists()


def test_a_guarded_wrapper_over_the_budget_is_undone(tmp_path: Path) -> None:
    """ICUL on the tiny model: its in-context instructions cost the retain set more than a tight
    budget allows; the guarded step hands back the model without the wrapper, says so, and flags it."""
    import json

    req, ret = write_data(tmp_path, 1)
    plan = {"model": str(learned_model_dir()), "method": "icul", "requests": [str(req)], "retain": [str(ret)],
            "evaluation": {"suite": "quick"}, "output": str(tmp_path / "run"),
            "guard": {"budget": {"retain_drop": 0.001}, "collateral": 0}}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    loaded = load_plan(tmp_path / "plan.yaml")
    run_plan(loaded)
    run = open_run(loaded)
    assert not isinstance(load_step(run, 1), WrappedSubject)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    card = results["steps"][0]["verdict"]
    assert card["verdict"] == "budget exceeded (rolled back to the start)" and card["violations"][0].startswith("retain: probability")
    assert [(f["kind"], f["value"]) for f in results["flags"]] == [("budget", 0.0)]
