"""`python distributed_eval_driver.py OUT MODEL`, on one process or several: the TOFU suite
(scoring and generation) on MODEL over the sequential tests' data; each process writes
OUT/rank-<RANK>.json with the rows and per-item values it ended with and how many forward
calls it made itself."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from sequential_helpers import requests, retain
from unlearnkit import distributed
from unlearnkit.eval.data import EvalData
from unlearnkit.eval.suites import evaluate
from unlearnkit.models.stack import load_subject

torch.set_num_threads(1)
out, model = Path(sys.argv[1]), sys.argv[2]
if distributed.launched():
    distributed.state()
subject = load_subject(model, device="cpu", dtype="float32", batch_size=2)  # several batches to deal out
calls = [0]
subject.model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
result = evaluate("tofu", subject, EvalData(requests=requests(2), retain=retain()))
rows = [[r.scope, r.metric, r.value, r.items] for r in result.rows]
per_item = {key: sorted(metric.per_item.items()) for key, metric in result.results.items()}  # item ids: order shows
(out / f"rank-{distributed.rank()}.json").write_text(json.dumps({"rows": rows, "per_item": per_item, "forward_calls": calls[0]}))
