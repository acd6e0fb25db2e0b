"""The warm `unlearnkit demo` before and after the fast path, side by side (docs/performance.md).

    .venv/bin/python bench/demo_fast_path.py [--folders /tmp/demo_before /tmp/demo_after] [--compare-only]
        [--out bench/results/demo_fast_path.json]

Runs two demos at the same time, one thread each (OMP_NUM_THREADS=1), so that both see the same
machine: "before" under UNLEARNKIT_FAST_PATH=0 (fp32, no shared prefixes, no length buckets,
per-operation AdamW; `prepare`'s cached target and oracles are the same), "after" with the
defaults. Both must be warm (the prepared models cached by an earlier `make demo`). Then it
compares their wall times, the ledger's per-step unlearning and evaluation seconds, and every
number of results.json: the largest relative difference of the forget, retain and utility
metrics, and each value that differs by more than 2%. `--compare-only` compares two folders
made earlier by the same commands.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}.{key}" if prefix else key).items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


def run_both(before: Path, after: Path) -> None:
    cli = [sys.executable, "-m", "unlearnkit", "demo"]
    base = {**os.environ, "OMP_NUM_THREADS": "1", "UNLEARNKIT_PROGRESS": "0"}
    runs = [subprocess.Popen([*cli, "--out", str(before)], env={**base, "UNLEARNKIT_FAST_PATH": "0"}, stdout=subprocess.DEVNULL),
            subprocess.Popen([*cli, "--out", str(after)], env={**base, "UNLEARNKIT_FAST_PATH": "1"}, stdout=subprocess.DEVNULL)]
    if any(r.wait() != 0 for r in runs):
        raise SystemExit("a demo failed; see its output above")


def steps(folder: Path) -> list[dict[str, Any]]:
    from unlearnkit.engine.ledger import Ledger

    ledger = Ledger(folder / "ledger.sqlite")
    rows = [{"step": s.step, "unlearn_s": round(s.unlearn_s, 1), "eval_s": round(s.eval_s or 0.0, 1)} for s in ledger.steps()]
    ledger.close()
    return rows


def compare(before: Path, after: Path) -> dict[str, Any]:
    b, a = (flat(json.loads((f / "results.json").read_text())) for f in (before, after))
    metrics = {k: (b[k], a[k]) for k in b if k in a and ".metrics." in k and isinstance(b[k], float) and isinstance(a[k], float)}
    relative = {k: abs(y - x) / max(abs(x), 1e-9) for k, (x, y) in metrics.items()}
    wall = [json.loads((f / "demo_timings.json").read_text())["total_s"] for f in (before, after)]
    return {
        "wall_s": {"before": round(wall[0], 1), "after": round(wall[1], 1), "before_over_after": round(wall[0] / wall[1], 3)},
        "steps": {"before": steps(before), "after": steps(after)},
        "metrics_compared": len(metrics),
        "largest_relative_difference": {group: max(v for k, v in relative.items() if f".{group}" in k) for group in ("probability", "truth_ratio", "quick_utility", "perplexity")},
        "over_2_percent": {k: {"before": round(metrics[k][0], 4), "after": round(metrics[k][1], 4)} for k, v in sorted(relative.items()) if v > 0.02},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folders", nargs=2, type=Path, default=[Path("/tmp/demo_before"), Path("/tmp/demo_after")])
    parser.add_argument("--compare-only", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "demo_fast_path.json")
    args = parser.parse_args()
    before, after = args.folders
    if not args.compare_only:
        run_both(before, after)
    result = {"bench": "demo_fast_path", "threads_per_demo": 1, "cpus": os.cpu_count(), **compare(before, after)}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
