"""Several processes give the result of one (docs/scale.md): the same plan on 1 and 2 CPU
processes (gloo, tiny model), under DDP and under FSDP 2, ends with the same weights and metrics;
rank 0 alone writes; a run whose second rank is killed resumes; `prepare` trains the same target
on 1 and 2 processes; a suite shares its batches among the processes and gets the numbers of one."""

from __future__ import annotations

import json
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

# NPO's retain term is KL to the model before the request: a frozen teacher (sharded under FSDP).
NPO = "{name: npo, settings: {lr: 2.0e-3, max_steps: 3, batch_size: 2, grad_accum: 2, alpha: 1.0, retain_loss: kl}}"
SSU = "{name: ssu, settings: {lr: 5.0e-3, max_steps: 2, batch_size: 2, grad_accum: 2, lora_r: 4, lora_alpha: 8, lora_dropout: 0.1}}"


def write_plan(folder: Path, method: str, num_requests: int = 2, extra: str = "") -> Path:
    write_data(folder, num_requests)
    plan = folder / "plan.yaml"
    plan.write_text(f"model: {learned_model_dir()}\nmethod: {method}\nrequests: [requests.jsonl]\nretain: [retain.jsonl]\n"
                    f"evaluation: {{suite: quick, per_set: 2}}\noutput: run\nseed: 5\nfinal: {{report: false}}\nguard: {{enabled: false}}\n"
                    # fp32: the equality below is float tolerance; under bf16 autocast Adam turns
                    # bf16 rounding in near-zero gradients into lr-sized weight differences.
                    f"precision: float32\n{extra}")
    return plan


def environment(**extra: str) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "UNLEARNKIT_PROGRESS": "0", "TRANSFORMERS_VERBOSITY": "error",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]), **extra}
    for key in ("UNLEARNKIT_CRASH_AT", "UNLEARNKIT_CRASH_RANK", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        if key not in extra:
            env.pop(key, None)
    return env


DRIVER = str(Path(__file__).with_name("distributed_driver.py"))  # `unlearnkit ARGS`, noting what it writes
EVAL_DRIVER = str(Path(__file__).with_name("distributed_eval_driver.py"))  # a suite, counting forward calls


def launch(script: str, args: list[str], processes: int, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`python SCRIPT ARGS` on 1 process, or on N through torch.distributed.run (gloo on CPU)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else [sys.executable]
    return subprocess.run([*launcher, script, *args], cwd=cwd, env=environment(**env), capture_output=True, text=True, timeout=900)


def unlearnkit(args: list[str], processes: int, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """`unlearnkit ARGS` on 1 process, or on N (gloo on CPU)."""
    (cwd / "writes").mkdir(exist_ok=True)
    return launch(DRIVER, args, processes, cwd, UNLEARNKIT_TEST_WRITES=str(cwd / "writes"), **extra)


def writes_into(folder: Path, rank: int) -> list[str]:
    """What process `rank` opened for writing, renamed, removed or created under `folder`."""
    log = folder.parent / "writes" / f"rank-{rank}.txt"
    assert log.exists(), f"rank {rank} left no record of its writes"
    return [line for line in log.read_text().splitlines() if line.startswith(str(folder))]


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


# Float tolerance on weights: an eighth of one step at lr 2e-3. Adam divides each update by
# √v, so float-order differences in near-zero gradients (a micro-batch summed on one process or
# exchanged between two) reach ~1e-5 after two steps on one CPU, 7.4e-5 on an AVX-512 EPYC and
# 1.46e-4 (2.16e-4 under FSDP) on an AVX-512 Intel Xeon (their kernels sum in other orders). A
# changed global batch moves weights by more than BATCH_MOVES
# (`test_a_different_global_batch_is_a_different_run`).
WEIGHTS_AGREE = 2.5e-4
BATCH_MOVES = 1e-3


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def assert_same_run(one: Path, two: Path, steps: int) -> None:
    start = load_file(learned_model_dir() / "model.safetensors")
    for step in range(1, steps + 1):
        assert max_difference(weights(one, step), start) > 1e-3  # it trained: equality below means something
        assert max_difference(weights(one, step), weights(two, step)) < WEIGHTS_AGREE
    m1, m2 = metrics(one), metrics(two)
    assert m1.keys() == m2.keys() and m1
    for key, value in m1.items():
        assert (value is None) == (m2[key] is None), key
        if value is not None:
            assert abs(value - m2[key]) < 1e-4, (key, value, m2[key])


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each method's plan on one process: the reference the multi-process runs must match."""
    runs = {}
    for name, method in (("npo", NPO), ("ssu", SSU)):
        folder = tmp_path_factory.mktemp(f"one-{name}")
        done = run_on(folder, method, 1)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = folder / "run"
    return runs


@pytest.mark.parametrize("name", ["npo", "ssu"])
def test_two_processes_give_the_weights_and_metrics_of_one(tmp_path: Path, one_process: dict[str, Path], name: str) -> None:
    two = run_on(tmp_path, {"npo": NPO, "ssu": SSU}[name], 2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert_same_run(one_process[name], tmp_path / "run", steps=2)
    # Only rank 0 wrote into the run folder (checkpoints, results, request copies, plan.yaml).
    assert writes_into(tmp_path / "run", 0) and writes_into(tmp_path / "run", 1) == []


def test_a_run_whose_second_rank_is_killed_resumes(tmp_path: Path, one_process: dict[str, Path]) -> None:
    """Rank 1 dies (SIGKILL) in the middle of step 2's training; the launcher stops rank 0; the
    ledger holds step 1 only, and the same command finishes the run with the weights of an
    uninterrupted one."""
    killed = run_on(tmp_path, NPO, 2, UNLEARNKIT_CRASH_AT="train:2", UNLEARNKIT_CRASH_RANK="1")
    assert killed.returncode != 0
    ledger = Ledger(tmp_path / "run" / "ledger.sqlite")
    assert [s.step for s in ledger.steps()] == [1] and ledger.check() == []
    ledger.close()
    resumed = run_on(tmp_path, NPO, 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout + resumed.stderr
    assert_same_run(one_process["npo"], tmp_path / "run", steps=2)


def test_a_suite_on_two_processes_deals_out_its_batches_and_gets_the_numbers_of_one(tmp_path: Path) -> None:
    """Scoring and generation (the TOFU suite: probabilities, truth ratios, ROUGE of greedy
    answers): each process runs part of the batches, together exactly the ones of one process,
    and every process ends with exactly the numbers of one."""
    ranks = {}
    for processes in (1, 2):
        out = tmp_path / str(processes)
        out.mkdir()
        done = launch(EVAL_DRIVER, [str(out), str(learned_model_dir())], processes, tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        ranks[processes] = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(processes)]
    (one,), two = ranks[1], ranks[2]
    assert any(metric == "rouge" and value is not None for _, metric, value, _ in one["rows"])  # it generated
    for rank in two:  # as JSON: a NaN row equals itself
        assert json.dumps(rank["rows"]) == json.dumps(one["rows"])
        assert json.dumps(rank["per_item"]) == json.dumps(one["per_item"])
    assert all(rank["forward_calls"] > 0 for rank in two)
    assert sum(rank["forward_calls"] for rank in two) == one["forward_calls"]


# What `accelerate launch` sets in each process from configs/accelerate/cpu-fsdp-2.yaml.
FSDP_ENV = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP", "FSDP_RESHARD_AFTER_FORWARD": "true"}


def test_prepare_on_two_processes_trains_the_target_of_one(tmp_path: Path) -> None:
    """DDP, and FSDP (where the length-grouped fine-tuning runs one group per micro-batch)."""
    from unlearnkit.benchmark.world import build_world

    world = build_world(tmp_path / "world", seed=0, size="tiny", num_requests=1)
    targets = []
    for number, (processes, extra) in enumerate([(1, {}), (2, {}), (2, FSDP_ENV)]):
        cache = tmp_path / f"cache-{number}"
        args = ["prepare", "--world", str(world), "--model", str(learned_model_dir()), "--oracles", "none", "--epochs", "1",
                "--lr", "1e-3", "--batch-size", "4", "--grad-accum", "2", "--precision", "float32", "--json", str(tmp_path / f"prepared-{number}.json")]
        done = unlearnkit(args, processes, tmp_path, UNLEARNKIT_CACHE=str(cache), **extra)
        assert done.returncode == 0, done.stderr[-3000:]
        (target,) = (cache / "prepared").iterdir()
        targets.append(load_file(target / "model.safetensors"))
    start = load_file(learned_model_dir() / "model.safetensors")
    assert max_difference(targets[0], start) > 1e-3
    assert max_difference(targets[0], targets[1]) < WEIGHTS_AGREE
    assert max_difference(targets[0], targets[2]) < WEIGHTS_AGREE


@pytest.mark.veryslow
def test_a_different_global_batch_is_a_different_run(tmp_path: Path, one_process: dict[str, Path]) -> None:
    """The comparison above can fail: it sees a changed global batch."""
    assert run_on(tmp_path, NPO.replace("grad_accum: 2", "grad_accum: 4"), 1).returncode == 0
    assert max_difference(weights(one_process["npo"], 1), weights(tmp_path / "run", 1)) > BATCH_MOVES >= 4 * WEIGHTS_AGREE


def test_a_global_batch_that_does_not_split_is_one_clear_line(tmp_path: Path) -> None:
    done = run_on(tmp_path, NPO.replace("grad_accum: 2", "grad_accum: 3"), 2)
    assert done.returncode != 0
    assert "grad_accum 3 is not a multiple of the 2 processes" in done.stderr


CPU_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "cpu-2.yaml"


def run_plan_file(plan: Path) -> subprocess.CompletedProcess[str]:
    """`unlearnkit run PLAN` as a user types it (a plan's `accelerate_config` launches the processes)."""
    return subprocess.run([sys.executable, "-m", "unlearnkit", "run", str(plan)], cwd=plan.parent, env=environment(),
                          capture_output=True, text=True, timeout=900)


def test_the_plan_key_accelerate_config_launches_the_processes(tmp_path: Path, one_process: dict[str, Path]) -> None:
    """`unlearnkit run plan.yaml` on one process starts itself on the config's two."""
    tmp_path.mkdir(exist_ok=True)
    done = run_plan_file(write_plan(tmp_path, NPO, extra=f"accelerate_config: {CPU_CONFIG}\n"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "training on 2 processes" in done.stdout + done.stderr
    assert_same_run(one_process["npo"], tmp_path / "run", steps=2)


FSDP_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "cpu-fsdp-2.yaml"


@pytest.mark.parametrize("guarded", [False, True])
def test_fsdp_on_two_processes_gives_the_weights_and_metrics_of_one(tmp_path: Path, one_process: dict[str, Path], guarded: bool) -> None:
    """The CPU FSDP config: accelerate starts two processes, the model and NPO's KL teacher
    train sharded (the loop refuses to go on if accelerate did not shard them), and the run
    ends where the one-process run does. Guarded, the damage budget checks the sharded model
    during training and rolls it back (both requests here) into its shards."""
    guard = "guard: {enabled: false}\n"
    if guarded:
        reference = tmp_path / "one"
        reference.mkdir()
        plan = write_plan(reference, NPO)
        plan.write_text(plan.read_text().replace(guard, ""))
        assert run_plan_file(plan).returncode == 0
    two = tmp_path / "two"
    two.mkdir()
    plan = write_plan(two, NPO, extra=f"accelerate_config: {FSDP_CONFIG}\n")
    if guarded:
        plan.write_text(plan.read_text().replace(guard, ""))
    done = run_plan_file(plan)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "training on 2 processes (FSDP 2" in output
    assert ("rolled back" in output) == guarded
    assert_same_run(tmp_path / "one" / "run" if guarded else one_process["npo"], two / "run", steps=2)


def test_launch_command_lines(tmp_path: Path) -> None:
    from unlearnkit.commands._launch import launch_command_line
    from unlearnkit.errors import UnlearnkitError

    command, env = launch_command_line(CPU_CONFIG, ["run", "p.yaml"])
    assert command[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"] and env["ACCELERATE_USE_CPU"] == "true"
    gpu = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "fsdp.yaml"
    command, _ = launch_command_line(gpu, ["run", "p.yaml"])
    assert command[1:5] == ["-m", "accelerate.commands.launch", "--config_file", str(gpu)] and command[-3:] == ["unlearnkit", "run", "p.yaml"]
    command, _ = launch_command_line(FSDP_CONFIG, ["run", "p.yaml"])  # on CPU too: accelerate starts FSDP's processes
    assert command[1:5] == ["-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG)]
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(UnlearnkitError, match="expected a mapping"):
        launch_command_line(bad, ["run", "p.yaml"])
