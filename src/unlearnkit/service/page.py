"""The status page (`GET /`): the queue, each request's timeline, the steps and the latest report.

Plain HTML from a jinja2 template (no JavaScript; the page reloads itself every 10 seconds with a
meta refresh), for operators and auditors.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from unlearnkit.display import number
from unlearnkit.service.store import STATUSES, ServiceStore

_ENV = Environment(loader=PackageLoader("unlearnkit.service", "templates"), autoescape=select_autoescape(["html", "j2"]))
TIMELINE = ("received", "blocked", "applied", "verified", "purged", "retired")


def status_page(store: ServiceStore, state: dict[str, Any], title: str, has_report: bool) -> str:
    requests = store.timelines()
    verdicts = store.ledger.verdicts()
    steps = [
        {"step": s.step, "requests": [r["id"] for r in requests if r["step"] == s.step] or [s.request_id],
         "verdict": verdicts.get(s.step, {}).get("verdict", "unguarded"), "unlearn_s": number(s.unlearn_s, 1),
         "eval_s": number(s.eval_s, 1) if s.eval_s is not None else "pending"}
        for s in store.ledger.steps()
    ]
    return _ENV.get_template("status.html.j2").render(
        title=title, state=state, counts=store.counts(), statuses=STATUSES, timeline=TIMELINE, has_report=has_report,
        queue=[r for r in requests if r["status"] in ("received", "blocked")], requests=requests, steps=steps[-50:],
    )
