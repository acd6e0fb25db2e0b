"""2-hop probe (multi-hop probing; docs/robustness.md): questions that compose a forgotten link with kept
knowledge ("where was X's mentor born?", answered by the mentor's birthplace), from the
request's `probes` (the world writes them; `unlearnkit world` / `build_world`).

`before` is the link question itself ("who is X's mentor?"): the forget record with the same
person and the probe's relation in its meta; without such meta, the request's QA records. A
model that forgot the link but answers the composed question has not forgotten it.
"""

from __future__ import annotations

from typing import ClassVar

from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.eval.attacks._base import Variant, register_attack
from unlearnkit.eval.attacks._probe import ProbeAttack, plain_probe
from unlearnkit.eval.data import EvalData


def link_records(probes: list[Record], records: list[Record]) -> list[Record]:
    """The forget records stating each probe's first hop (person + relation), once each."""
    by_key = {(r.meta.get("person"), r.meta.get("attribute")): r for r in records if r.kind == "qa"}
    links = [by_key.get((p.meta.get("person"), p.meta.get("relation"))) for p in probes]
    return list({id(r): r for r in links if r is not None}.values())


@register_attack("two_hop")
class TwoHop(ProbeAttack):
    description: ClassVar[str] = "2-hop questions through a forgotten relation"

    def variants(self, request: ForgetRequest, data: EvalData, notes: list[str]) -> list[Variant]:
        probes = self.qa(request.probes)
        if not probes:
            notes.append("no 2-hop probes in the request (a world writes them as `probes`); skipped")
            return []
        links = link_records(probes, request.records)
        if not links:
            notes.append("no forget record states the probes' first hop (person + relation meta): before = the request's QA records")
            links = self.qa(request.records)
        return [Variant("2hop", self.measure([plain_probe(r) for r in links]), self.measure([plain_probe(p) for p in probes]), items=len(probes))]
