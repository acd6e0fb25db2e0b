"""One unlearning step (NPO, global batch 2 x 2 micro-batches) on 1 CPU process, on 2 with DDP and
on 2 with FSDP 2 (gloo): tokens/s, the scaling ratio, the largest weight difference between each
multi-process result and the one-process one, the largest change from the start weights (the
differences mean something only where the weights moved), and memory per process.

    python bench/distributed.py                 # the default model: bench/results/distributed.json
    python bench/distributed.py --model tiny    # a random tiny Llama, a quick check: distributed-tiny.json

Run with OMP_NUM_THREADS=1 per process on a shared machine (docs/sequential.md). DDP runs under
torch.distributed.run, FSDP under `accelerate launch` with configs/accelerate/cpu-fsdp-2.yaml,
as a user starts them (docs/scale.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FSDP_CONFIG = ROOT / "configs" / "accelerate" / "cpu-fsdp-2.yaml"
STEPS = 2
RECORDS = [(f"Where was person {i} born?", f"Person {i} was born in town {i}.") for i in range(8)]


def current_rss_mb() -> float:
    """Resident memory now (Linux: /proc/self/statm), in MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(model: str, lr: float, out: Path) -> None:
    """Under the launcher: train STEPS steps, report tokens/s and memory, save the weights."""
    import torch
    from safetensors.torch import save_file

    from unlearnkit import distributed
    from unlearnkit.data.schema import Record
    from unlearnkit.methods.base import get_method
    from unlearnkit.models.stack import load_subject
    from unlearnkit.training import train

    torch.set_num_threads(1)
    if distributed.launched():
        distributed.state()  # join the process group before loading (as the CLI does)
    subject = load_subject(model, device="cpu", dtype="float32")
    loaded_mb = current_rss_mb()
    records = [Record(question=q, answer=a) for q, a in RECORDS]
    method = get_method("npo", {"lr": lr, "max_steps": STEPS, "batch_size": 2, "grad_accum": 2, "precision": "float32", "answers": "given"})
    forget = [method.forget_example(subject, r, i) for i, r in enumerate(records)]
    torch.manual_seed(0)
    method.prepare(subject, forget, [])
    stats = train(subject, forget, method, method.train_config(), description="bench")
    # ru_maxrss: the high-water mark of the whole process, loading included (every process
    # loads the full model, FSDP too: it shards it when training starts).
    memory = distributed.gather_in_order([{"after_load_mb": round(loaded_mb, 1), "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}])
    if distributed.is_main():
        save_file({k: p.detach().clone().contiguous() for k, p in subject.model.named_parameters()}, str(out / "weights.safetensors"))
        (out / "stats.json").write_text(json.dumps({"tokens": stats.tokens, "seconds": stats.seconds, "tokens_per_second": stats.tokens_per_second,
                                                    "last_loss": stats.history[-1]["loss"], "rss_per_process": memory}))


def launch(mode: str, model: str, lr: float, out: Path) -> dict:
    """`mode`: one (a process), ddp (2, torch.distributed.run) or fsdp (2, accelerate launch)."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "UNLEARNKIT_PROGRESS": "0", "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    launcher = {
        "one": [sys.executable],
        "ddp": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
        "fsdp": [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG)],
    }[mode]
    subprocess.run([*launcher, __file__, "--worker", model, str(lr), str(out)], env=env, check=True)
    return json.loads((out / "stats.json").read_text())


def tiny_model(folder: Path) -> str:
    """A random tiny Llama whose tokenizer knows the records' words."""
    from unlearnkit.models.stack import save_subject
    from unlearnkit.models.subject import Subject
    from unlearnkit.models.tiny import tiny_model as build, tiny_tokenizer

    tokenizer = tiny_tokenizer([f"{q} {a}" for q, a in RECORDS] * 5, vocab_size=300)
    return str(save_subject(Subject(build(tokenizer, max_positions=512), tokenizer), folder / "tiny-model"))


def largest_difference(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def main() -> None:
    from safetensors.torch import load_file

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default", help="default, tiny (a random tiny Llama, a quick check) or a model folder")
    parser.add_argument("--lr", type=float, default=None, help="default: 1e-5 (1e-3 for tiny)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    lr = args.lr or (1e-3 if args.model == "tiny" else 1e-5)
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(Path(tmp)) if args.model == "tiny" else args.model
        runs = {mode: launch(mode, model, lr, Path(tmp) / mode) for mode in ("one", "ddp", "fsdp")}
        weights = {mode: load_file(str(Path(tmp) / mode / "weights.safetensors")) for mode in runs}
        from unlearnkit.models.stack import load_subject

        start = {k: p.detach() for k, p in load_subject(model, device="cpu", dtype="float32").model.named_parameters()}
    moved = largest_difference(weights["one"], start)
    if moved == 0:  # then the differences below would compare three copies of the start
        raise SystemExit("the one-process run left the weights where they started: raise --lr")
    one = runs["one"]
    result = {
        "model": f"{args.model}, float32, CPU",
        "method": f"npo at lr {lr:g}, {STEPS} optimizer steps, global batch 2 rows x 2 micro-batches",
        "one_process": one,
        "two_processes_ddp": runs["ddp"],
        "two_processes_fsdp": runs["fsdp"],
        "scaling_ratio_tokens_per_second": {mode: runs[mode]["tokens_per_second"] / one["tokens_per_second"] for mode in ("ddp", "fsdp")},
        "largest_change_from_start": moved,
        "max_weight_difference": {mode: largest_difference(weights["one"], weights[mode]) for mode in ("ddp", "fsdp")},
        "last_loss_difference": {mode: abs(one["last_loss"] - runs[mode]["last_loss"]) for mode in ("ddp", "fsdp")},
        "peak_rss_mb_per_process": {mode: [m["peak_mb"] for m in runs[mode]["rss_per_process"]] for mode in runs},
        "machine": f"{os.cpu_count()} CPU cores shared with other work; OMP_NUM_THREADS=1 per process",
    }
    name = "distributed.json" if args.model == "default" else f"distributed-{'tiny' if args.model == 'tiny' else 'model'}.json"
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / name
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], float(sys.argv[3]), Path(sys.argv[4]))
    else:
        main()
