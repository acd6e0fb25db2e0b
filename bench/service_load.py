"""Load on `unlearnkit serve`: concurrent submitters and chat clients, a SIGKILL in the middle, a restart.

    .venv/bin/python bench/service_load.py [--model default|tiny|PATH] [--clients 50] [--requests 1000]
        [--chats 200] [--coalesce 100] [--kill-at 0.5] [--verify-timeout 10800]
        [--out bench/results/service_load-<model>.json]

What it does, all on 127.0.0.1 and bounded in count and time:

1. writes a serve plan in a temporary run folder (the model, `npo_gd` with a bounded number of
   optimiser steps, the example retain and real-world question files, the `quick` suite, the
   given `coalesce`), adds a submitter and an operator key, starts `python -m unlearnkit serve`;
2. `--clients` threads share `--requests` synthetic removal requests (one fictitious person's
   birthplace each, ids `load-0000`, ...) and `--chats` chat completions (half ask about a
   person already submitted, which the guard should refuse, half ask a kept question); every
   submission carries an Idempotency-Key and is retried with it until it gets an answer;
3. after `--kill-at` of the submissions, the server is SIGKILLed (no cleanup) and started again;
   clients whose connection broke retry against the new process;
4. waits until every accepted request is verified (or `--verify-timeout` seconds), stops the
   server with SIGTERM, and checks the ledger: every accepted id is there once, every applied
   request was applied by exactly one step, `Ledger.check()` finds nothing;
5. measures, on the idle machine afterwards, the same kept prompts through the served checkpoint
   with and without the guard in front (the guard's own cost per completion).

Chats "about_removed" paraphrase a person submitted more than 5 s earlier (the guard should
refuse every one); "kept" ones ask general questions (it should refuse none).

Latencies are client-side wall clock; submit-to-blocked and submit-to-verified come from the
ledger's event times (server clock, milliseconds). The JSON has every figure; docs/service.md
has the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SYLLABLES = ["ka", "lo", "mi", "re", "sun", "ta", "vel", "dor", "an", "is", "bel", "cor", "fen", "gar", "hol", "jun"]
TOWNS = ["Tarnholm", "Quillby", "Varn", "Ostrel", "Maddock", "Lune", "Brisk", "Hallow", "Pellin", "Sorrow Bay"]
RETRY_FOR_S = 1800.0  # a client gives up on one chat after this long (a restart of the default takes about a minute)
BLOCK_WITHIN = 5.0  # seconds: the bound on submit-to-blocked (p99)
KEPT = ["What is the capital of France?", "Which river flows through Cairo?", "What is the largest ocean?", "Who wrote Hamlet?"]


def person(i: int) -> tuple[str, str]:
    rng = random.Random(i)
    name = " ".join("".join(rng.choice(SYLLABLES) for _ in range(2)).capitalize() for _ in range(2))
    return f"{name} {i}", TOWNS[i % len(TOWNS)]


def request_body(i: int) -> dict[str, Any]:
    name, town = person(i)
    return {"id": f"load-{i:04d}", "kind": "privacy",
            "records": [{"question": f"Where was {name} born?", "answer": f"{name} was born in {town}."}]}


def quantiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(values), "p50": round(pick(0.5), 4), "p99": round(pick(0.99), 4), "max": round(ordered[-1], 4),
            "mean": round(statistics.fmean(values), 4)}


# -- the plan and the server ---------------------------------------------------------------------
def tiny_model(folder: Path) -> str:
    from unlearnkit.models.stack import save_subject
    from unlearnkit.models.subject import Subject
    from unlearnkit.models.tiny import tiny_model as build, tiny_tokenizer

    corpus = [" ".join(request_body(i)["records"][0].values()) for i in range(200)] + KEPT
    tokenizer = tiny_tokenizer(corpus * 3, vocab_size=400)
    return str(save_subject(Subject(build(tokenizer, max_positions=512), tokenizer), folder / "tiny-model"))


def write_plan(folder: Path, model: str, coalesce: int, max_steps: int) -> Path:
    examples = ROOT / "examples"
    plan = folder / "plan.yaml"
    plan.write_text(json.dumps({
        "model": model,
        "method": {"name": "npo_gd", "settings": {"lr": 5.0e-5, "alpha": 2.0, "max_steps": max_steps, "batch_size": 8}},
        "requests": [{"submitted": True}],
        "retain": [str(examples / "retain.jsonl")],
        "utility": [f"real_facts={examples / 'questions.jsonl'}"],
        "evaluation": {"suite": "quick", "per_set": 2, "max_new_tokens": 16},
        "output": str(folder / "run"),
        "checkpoints": {"keep": "last:1"},
        "coalesce": coalesce,
        "final": {"report": False},
        "service": {"max_new_tokens": 32},
    }, indent=1))  # JSON is YAML
    return plan


class Server:
    def __init__(self, plan: Path, log: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.plan, self.log, self.url = plan, log, f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 1800) -> float:
        import httpx

        tick = time.perf_counter()
        env = {**os.environ, "UNLEARNKIT_PROGRESS": "0"}
        self.proc = subprocess.Popen([sys.executable, "-m", "unlearnkit", "serve", str(self.plan), "--port", str(self.port)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"))
        while time.perf_counter() - tick < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited with {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return time.perf_counter() - tick
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"the server was not ready after {timeout} s; see {self.log}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(60)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(1800)


# -- the load ------------------------------------------------------------------------------------
class Load:
    """The shared work list and what the clients saw."""

    def __init__(self, requests: int, chats: int, submitter: str, url: str, kill_at: float | None) -> None:
        self.jobs: list[tuple[str, int]] = [("submit", i) for i in range(requests)] + [("chat", i) for i in range(chats)]
        random.Random(0).shuffle(self.jobs)
        # Submissions keep their order relative to each other, so the kill lands mid-stream.
        submits = iter(i for i in range(requests))
        self.jobs = [("submit", next(submits)) if kind == "submit" else (kind, i) for kind, i in self.jobs]
        self.headers = {"Authorization": f"Bearer {submitter}"}
        self.url, self.lock = url, threading.Lock()
        self.kill_after = None if kill_at is None else int(requests * kill_at)
        self.accepted: dict[str, int] = {}
        self.accepted_at: dict[str, float] = {}
        self.submit_s: list[float] = []
        self.chat: dict[str, list[float]] = {"answered": [], "refused": []}
        self.asked: dict[str, dict[str, int]] = {"about_removed": {"asked": 0, "refused": 0}, "kept": {"asked": 0, "refused": 0}}
        self.paraphrases: list[tuple[str, datetime, bool]] = []  # (request id, when asked, refused)
        self.retries = 0
        self.errors: list[str] = []
        self.submitted = 0

    def next_job(self) -> tuple[str, int] | None:
        with self.lock:
            return self.jobs.pop(0) if self.jobs else None

    def client(self) -> None:
        import httpx

        with httpx.Client(base_url=self.url, headers=self.headers, timeout=600) as http:
            while (job := self.next_job()) is not None:
                kind, i = job
                if kind == "submit":
                    self.submit(http, i)
                else:
                    self.ask(http, i)

    def submit(self, http: Any, i: int) -> None:
        import httpx

        body, key = request_body(i), f"load-{i}"
        while True:
            tick = time.perf_counter()
            try:
                answer = http.post("/v1/requests", json=body, headers={"Idempotency-Key": key})
            except httpx.HTTPError:
                with self.lock:
                    self.retries += 1
                time.sleep(0.5)  # the server is down: retry the same key until the new one answers
                continue
            if answer.status_code in (200, 202):
                with self.lock:
                    self.submit_s.append(time.perf_counter() - tick)
                    self.accepted[answer.json()["id"]] = self.accepted.get(answer.json()["id"], 0) + 1
                    self.accepted_at.setdefault(answer.json()["id"], time.monotonic())
                    self.submitted += 1
                return
            if answer.status_code == 503:
                time.sleep(0.5)
                continue
            with self.lock:
                self.errors.append(f"submit {i}: {answer.status_code} {answer.text[:200]}")
            return

    def ask(self, http: Any, i: int) -> None:
        import httpx

        with self.lock:  # a person submitted over BLOCK_WITHIN seconds ago must be refused by now
            known = sorted(rid for rid, at in self.accepted_at.items() if time.monotonic() - at > BLOCK_WITHIN)
        about_removed = bool(i % 2 == 0 and known)
        target = random.Random(i).choice(known) if about_removed else None
        prompt = f"In which town was {person(int(target.split('-')[1]))[0]} born?" if target else KEPT[i % len(KEPT)]
        deadline = time.monotonic() + RETRY_FOR_S
        while time.monotonic() < deadline:  # through a restart too
            tick, asked_at = time.perf_counter(), datetime.now(timezone.utc)
            try:
                answer = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": prompt}], "max_tokens": 24})
            except httpx.HTTPError:
                time.sleep(0.5)
                continue
            if answer.status_code == 200:
                kind = "refused" if answer.headers.get("x-unlearnkit-refused") == "true" else "answered"
                topic = "about_removed" if about_removed else "kept"
                with self.lock:
                    self.chat[kind].append(time.perf_counter() - tick)
                    self.asked[topic]["asked"] += 1
                    self.asked[topic]["refused"] += kind == "refused"
                    if target:
                        self.paraphrases.append((target, asked_at, kind == "refused"))
                return
            time.sleep(0.5)
        with self.lock:
            self.errors.append(f"chat {i}: no answer within {RETRY_FOR_S:.0f} s")


def run_load(load: Load, clients: int, server: Server) -> dict[str, Any]:
    threads = [threading.Thread(target=load.client, daemon=True) for _ in range(clients)]
    tick = time.perf_counter()
    for t in threads:
        t.start()
    killed: dict[str, Any] = {}
    if load.kill_after is not None:
        while load.submitted < load.kill_after and any(t.is_alive() for t in threads):
            time.sleep(0.05)
        killed = {"after_accepted": load.submitted, "at_s": round(time.perf_counter() - tick, 2), "at": datetime.now(timezone.utc).isoformat()}
        server.kill()
        killed["restart_s"] = round(server.start(), 2)
        killed["ready_again"] = datetime.now(timezone.utc).isoformat()
    for t in threads:
        t.join()
    return {"load_s": round(time.perf_counter() - tick, 2), "kill": killed or None}


# -- after the load --------------------------------------------------------------------------------
def wait_verified(run: Path, ids: set[str], timeout: float) -> float:
    from unlearnkit.engine.ledger import Ledger

    tick = time.perf_counter()
    while time.perf_counter() - tick < timeout:
        ledger = Ledger(run / "ledger.sqlite")
        done = {r["id"] for r in ledger.requests() if r["status"] in ("verified", "purged")}
        ledger.close()
        if ids <= done:
            break
        time.sleep(5)
    return time.perf_counter() - tick


def ledger_figures(run: Path, accepted: dict[str, int], outage: tuple[datetime, datetime] | None,
                   paraphrases: list[tuple[str, datetime, bool]]) -> dict[str, Any]:
    from unlearnkit.engine.ledger import Ledger

    ledger = Ledger(run / "ledger.sqlite")
    rows = ledger.requests()
    ids = [r["id"] for r in rows]
    events: dict[str, dict[str, datetime]] = {}
    for e in ledger.db.execute("SELECT request_id, event, at FROM service_events WHERE request_id IS NOT NULL"):
        events.setdefault(e["request_id"], {})[e["event"]] = datetime.fromisoformat(e["at"])
    applied_events = ledger.db.execute("SELECT request_id, COUNT(*) AS n FROM service_events WHERE event = 'applied' GROUP BY 1").fetchall()
    steps = ledger.steps()
    figures = {
        "accepted": len(accepted),
        "in_ledger": len(ids),
        "lost": sorted(set(accepted) - set(ids)),
        "duplicated": sorted({i for i in ids if ids.count(i) > 1}),
        "unexpected": sorted(set(ids) - set(accepted)),
        "steps": len(steps),
        "verified": sum(r["status"] in ("verified", "purged") for r in rows),
        "applied_twice": sorted(r["request_id"] for r in applied_events if r["n"] > 1),
        "ledger_problems": ledger.check(),
        "requests_per_step": quantiles([float(sum(1 for r in rows if r["step"] == s.step)) for s in steps]),
        "step_unlearn_s": quantiles([s.unlearn_s for s in steps]),
        "step_eval_s": quantiles([s.eval_s for s in steps if s.eval_s is not None]),
        "submit_to_blocked_s": quantiles([(e["blocked"] - e["received"]).total_seconds() for e in events.values() if "blocked" in e and "received" in e]),
        # Requests waiting while the server was down (from the SIGKILL until it was ready again) waited for the restart.
        "submit_to_blocked_s_outside_the_restart": quantiles([
            (e["blocked"] - e["received"]).total_seconds() for e in events.values()
            if "blocked" in e and "received" in e and not (outage is not None and e["received"] < outage[1] and e["blocked"] > outage[0])]),
        # A paraphrase asked after its request's `blocked` event must be refused; before it, it may not be.
        "paraphrases_after_blocked": {"asked": sum(1 for rid, at, _ in paraphrases if "blocked" in events.get(rid, {}) and at > events[rid]["blocked"]),
                                      "refused": sum(1 for rid, at, ok in paraphrases if ok and "blocked" in events.get(rid, {}) and at > events[rid]["blocked"])},
        "paraphrases_before_blocked": sum(1 for rid, at, _ in paraphrases if not ("blocked" in events.get(rid, {}) and at > events[rid]["blocked"])),
        "submit_to_verified_s": quantiles([(e["verified"] - e["received"]).total_seconds() for e in events.values() if "verified" in e and "received" in e]),
    }
    ledger.close()
    return figures


def guard_overhead(run: Path, prompts: list[str], repeats: int = 3) -> dict[str, Any]:
    """The served checkpoint answering the same kept prompts with and without the guard, idle."""
    from unlearnkit.engine.ledger import Ledger
    from unlearnkit.methods.guard import GuardedSubject, load_index
    from unlearnkit.models.stack import load_subject
    from unlearnkit.models.subject import GenerationSettings

    ledger = Ledger(run / "ledger.sqlite")
    last = ledger.steps()[-1].checkpoint if ledger.steps() else None
    ledger.close()
    if last is None or not (run / last).exists():
        return {}
    model = load_subject(run / last)
    guarded = GuardedSubject(model, index=load_index(run / "service" / "guard"))
    settings = GenerationSettings(max_new_tokens=24, batch_size=1)
    guarded.generate(prompts[:1], settings)  # the embedder and the model warm, not timed
    timings: dict[str, list[float]] = {"without_guard": [], "with_guard": []}
    for _ in range(repeats):
        for prompt in prompts:
            for name, subject in (("without_guard", model), ("with_guard", guarded)):
                tick = time.perf_counter()
                subject.generate([prompt], settings)
                timings[name].append(time.perf_counter() - tick)
    return {name: quantiles(values) for name, values in timings.items()} | {"guard_entries": len(guarded.index)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", help="default, tiny (a random tiny Llama, for a quick check) or a model folder")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--coalesce", type=int, default=100, help="requests applied together per step (plan key coalesce)")
    parser.add_argument("--max-steps", type=int, default=10, help="optimiser steps per unlearning step (npo_gd)")
    parser.add_argument("--kill-at", type=float, default=0.5, help="SIGKILL the server after this share of submissions (negative: never)")
    parser.add_argument("--verify-timeout", type=float, default=3 * 3600, help="seconds to wait for every request to be verified")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not (1 <= args.clients <= 200 and 1 <= args.requests <= 10_000 and 0 <= args.chats <= 10_000):
        raise SystemExit("keep the load bounded: 1-200 clients, 1-10000 requests, 0-10000 chats")
    out = args.out or ROOT / "bench" / "results" / f"service_load-{args.model if args.model in ('default', 'tiny') else 'model'}.json"
    from unlearnkit.service.store import ServiceStore

    folder = Path(tempfile.mkdtemp(prefix="unlearnkit-service-load-"))
    model = tiny_model(folder) if args.model == "tiny" else args.model
    plan = write_plan(folder, model, args.coalesce, args.max_steps)
    store = ServiceStore(folder / "run")
    submitter = store.add_key("load", "submitter").token
    store.close()
    server = Server(plan, folder / "server.log")
    first_start_s = server.start()
    load = Load(args.requests, args.chats, submitter, server.url, None if args.kill_at < 0 else args.kill_at)
    print(f"server ready in {first_start_s:.1f} s; {args.clients} clients, {args.requests} requests, {args.chats} chats", flush=True)
    loaded = run_load(load, args.clients, server)
    print(f"load done in {loaded['load_s']} s (kill: {loaded['kill']}); waiting for verification", flush=True)
    verify_wait_s = wait_verified(folder / "run", set(load.accepted), args.verify_timeout)
    exit_code = server.terminate()
    outage = (datetime.fromisoformat(loaded["kill"]["at"]), datetime.fromisoformat(loaded["kill"]["ready_again"])) if loaded["kill"] else None
    figures = ledger_figures(folder / "run", load.accepted, outage, load.paraphrases)
    result = {
        "script": "bench/service_load.py",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "python": platform.python_version()},
        "run_folder": str(folder / "run"),
        "first_start_s": round(first_start_s, 2),
        **loaded,
        "client": {"submit_latency_s": quantiles(load.submit_s), "chat_answered_latency_s": quantiles(load.chat["answered"]),
                   "chat_refused_latency_s": quantiles(load.chat["refused"]), "chats": load.asked,
                   "submit_retries_after_errors": load.retries,
                   "errors": load.errors[:20]},
        "ledger": figures,
        "verify_wait_s": round(verify_wait_s, 1),
        "sigterm_exit_code": exit_code,
        "guard_overhead_idle_s": guard_overhead(folder / "run", KEPT),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    ok = not (figures["lost"] or figures["duplicated"] or figures["applied_twice"] or figures["ledger_problems"])
    print(json.dumps({k: result[k] for k in ("load_s", "kill", "client", "verify_wait_s")}, indent=1, default=str))
    print(f"{'OK' if ok else 'PROBLEMS'}: {figures['accepted']} accepted, {figures['in_ledger']} in the ledger, "
          f"{len(figures['lost'])} lost, {len(figures['duplicated'])} duplicated, {len(figures['applied_twice'])} applied twice, "
          f"{figures['verified']} verified in {figures['steps']} steps; wrote {out}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
