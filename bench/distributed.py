"""One unlearning step (NPO, global batch 2 x 2 micro-batches) of the default model on 1 and on 2
CPU processes (gloo, torch.distributed.run): tokens/s, the scaling ratio, the largest weight
difference between the two results, the forget-loss difference, and peak memory per process.

    python bench/distributed.py            # writes bench/results/distributed.json

Run with OMP_NUM_THREADS=1 per process on a shared machine (docs/sequential.md). FSDP is not
measured: see docs/scale.md, "Not done yet".
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = 2


def worker(out: Path) -> None:
    """Under the launcher: train STEPS steps, report tokens/s and peak memory, save the weights."""
    import torch
    from safetensors.torch import save_file

    from unlearnkit import distributed
    from unlearnkit.data.schema import Record
    from unlearnkit.methods.gradient import reference_logprobs  # noqa: F401  (NPO's cache, sharded)
    from unlearnkit.methods.base import get_method
    from unlearnkit.models.stack import load_subject
    from unlearnkit.training import train

    torch.set_num_threads(1)
    subject = load_subject("default", device="cpu", dtype="float32")
    records = [Record(question=f"Where was person {i} born?", answer=f"Person {i} was born in town {i}.") for i in range(8)]
    method = get_method("npo", {"lr": 1e-5, "max_steps": STEPS, "batch_size": 2, "grad_accum": 2})
    forget = [method.forget_example(subject, r, i) for i, r in enumerate(records)]
    torch.manual_seed(0)
    method.prepare(subject, forget, [])
    stats = train(subject, forget, method, method.train_config(), description="bench")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peaks = distributed.gather_in_order([peak_mb])
    if distributed.is_main():
        save_file({k: p.detach().clone().contiguous() for k, p in subject.model.named_parameters()}, str(out / "weights.safetensors"))
        (out / "stats.json").write_text(json.dumps({"tokens": stats.tokens, "seconds": stats.seconds, "tokens_per_second": stats.tokens_per_second,
                                                    "last_loss": stats.history[-1]["loss"], "peak_rss_mb_per_process": peaks}))


def launch(processes: int, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "UNLEARNKIT_PROGRESS": "0", "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else [sys.executable]
    subprocess.run([*launcher, __file__, "--worker", str(out)], env=env, check=True)
    return json.loads((out / "stats.json").read_text())


def main() -> None:
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as tmp:
        one, two = launch(1, Path(tmp) / "one"), launch(2, Path(tmp) / "two")
        a, b = load_file(str(Path(tmp) / "one" / "weights.safetensors")), load_file(str(Path(tmp) / "two" / "weights.safetensors"))
        max_diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    result = {
        "model": "default (SmolLM2-135M-Instruct), float32, CPU",
        "method": "npo, 2 optimizer steps, global batch 2 rows x 2 micro-batches",
        "one_process": one,
        "two_processes": two,
        "scaling_ratio_tokens_per_second": two["tokens_per_second"] / one["tokens_per_second"],
        "max_weight_difference": max_diff,
        "last_loss_difference": abs(one["last_loss"] - two["last_loss"]),
        "machine": f"{os.cpu_count()} CPU cores shared with other work; OMP_NUM_THREADS=1 per process",
        "fsdp": "not measured (docs/scale.md, Not done yet)",
    }
    out = ROOT / "bench" / "results" / "distributed.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(Path(sys.argv[2]))
    else:
        main()
