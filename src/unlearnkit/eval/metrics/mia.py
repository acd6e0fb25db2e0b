"""Membership inference and PrivLeak (docs/metrics.md, Membership inference; MUSE's and
OpenUnlearning's definitions).

Each attack gives every record a loss-like score (higher = "less likely a member"); the metric
value is the AUC of members (`data.records`, the forget set) against non-members
(`data.nonmembers`, never trained) in OU's convention: 1 = members recognised, 0.5 = chance.

QA records are scored on the answer (+EOS) given the templated question, passages on the whole
text after BOS; `kind` picks one ("auto": passages when both sides have some, else QA). LOSS and
zlib use every scored token; Min-K and Min-K%++ leave out the last one as OpenUnlearning does
(`last_token="drop"`; MUSE's own PrivLeak keeps it: `last_token="keep"`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from unlearnkit.data.schema import Record
from unlearnkit.errors import UnlearnkitError
from unlearnkit.eval import primitives as P
from unlearnkit.eval.gradnorm import gradient_norms
from unlearnkit.eval.metric import Metric, MetricInput, MetricResult, Reference, item_id, of_source, register_metric
from unlearnkit.eval.metrics._common import Pair, mean_nll, score_pairs, scored_pair
from unlearnkit.models.subject import Subject


class MembershipAttack(Metric):
    """Base: subclasses define `scores(subject, records, reference)`."""

    kinds = ("qa", "passage")
    needs_nonmembers = True
    higher_is_better = None  # toward the oracle's AUC (≈0.5 for a model that never saw the data)
    remembered_when = None  # likewise on forget data: the oracle's AUC, not a direction
    uses_stats: ClassVar[bool] = False

    kind: Literal["auto", "qa", "passage"] = "auto"
    source: str | None = None  # the members' benchmark split (see `of_source`)

    def chosen_kind(self, data: MetricInput) -> str:
        if self.kind != "auto":
            return self.kind
        both = all(any(r.kind == "passage" for r in side) for side in (data.records, data.nonmembers))
        return "passage" if both else "qa"

    def split(self, data: MetricInput | list[Record]) -> tuple[list[Record], list[Record]]:
        data = MetricInput.of(data)
        kind = self.chosen_kind(data)
        members = of_source([r for r in data.records if r.kind == kind], self.source)
        return members, [r for r in data.nonmembers if r.kind == kind]

    def applies(self, data: MetricInput | list[Record]) -> bool:
        members, nonmembers = self.split(data)
        return bool(members) and bool(nonmembers)

    def scores(self, subject: Subject, records: list[Record], reference: Reference) -> list[float]:
        raise NotImplementedError

    def compute(self, subject: Subject, data: MetricInput | list[Record], reference: Reference = None) -> MetricResult:
        members, nonmembers = self.split(data)
        # One call for both sides, so their items land in the same batched (shared) pass.
        scores = self.scores(subject, members + nonmembers, reference)
        inside, outside = scores[: len(members)], scores[len(members) :]
        per_item = {item_id(r, i): s for i, (r, s) in enumerate(zip(members, inside))}
        per_item |= {f"nonmember:{item_id(r, i)}": s for i, (r, s) in enumerate(zip(nonmembers, outside))}
        details = {"kind": self.chosen_kind(MetricInput.of(data)), "members": len(members), "nonmembers": len(nonmembers)}
        return MetricResult(P.mia_auc(inside, outside), per_item, details)

    def _scored(self, subject: Subject, records: list[Record]) -> list[Any]:
        return score_pairs(subject, [scored_pair(r) for r in records], stats=self.uses_stats)


@register_metric("mia_loss")
class LossAttack(MembershipAttack):
    description = "LOSS membership AUC of the forget set against the holdout set, 0.5 at chance"

    def scores(self, subject: Subject, records: list[Record], reference: Reference) -> list[float]:
        return [P.loss_score(s.logprobs) for s in self._scored(subject, records)]


@register_metric("mia_zlib")
class ZlibAttack(MembershipAttack):
    description = "zlib membership AUC of the forget set against the holdout set, 0.5 at chance"

    def scores(self, subject: Subject, records: list[Record], reference: Reference) -> list[float]:
        pairs: list[Pair] = [scored_pair(r) for r in records]
        return [P.zlib_score(s.logprobs, p.target) for s, p in zip(self._scored(subject, records), pairs)]


@register_metric("mia_min_k")
class MinKAttack(MembershipAttack):
    description = "Min-K% membership AUC of the forget set against the holdout set, 0.5 at chance"

    k: float = Field(0.4, gt=0.0, le=1.0)
    last_token: Literal["drop", "keep"] = "drop"  # OU drops it; MUSE's privleak keeps it

    def span(self, values: Any) -> Any:
        return P.reference_span(values) if self.last_token == "drop" and len(values) > 1 else values

    def scores(self, subject: Subject, records: list[Record], reference: Reference) -> list[float]:
        return [P.min_k_score(self.span(s.logprobs), self.k) for s in self._scored(subject, records)]


@register_metric("mia_min_k_pp")
class MinKPlusPlusAttack(MinKAttack):
    description = "Min-K%++ membership AUC of the forget set against the holdout set, 0.5 at chance"
    uses_stats = True

    def scores(self, subject: Subject, records: list[Record], reference: Reference) -> list[float]:
        return [
            P.min_k_plus_plus_score(self.span(s.logprobs), self.span(s.mu), self.span(s.sigma), self.k)
            for s in self._scored(subject, records)
        ]


@register_metric("mia_reference")
class ReferenceAttack(MembershipAttack):
    """L̄_target − L̄_reference; `reference` is the reference model (OU suggests the retain model)."""

    needs_reference = True
    description = "reference-model membership AUC of the forget set against the holdout set, 0.5 at chance"

    def scores(self, subject: Subject, records: list[Record], reference: Reference) -> list[float]:
        if not isinstance(reference, Subject):
            raise UnlearnkitError("mia_reference needs a reference model (for example the oracle)")
        ours = [mean_nll(s) for s in self._scored(subject, records)]
        theirs = [mean_nll(s) for s in self._scored(reference, records)]
        return [P.reference_score(a, b) for a, b in zip(ours, theirs)]


@register_metric("mia_gradnorm")
class GradNormAttack(MembershipAttack):
    """Mean over parameter tensors of the gradient p-norm of the item's mean NLL
    (OpenUnlearning's GradNorm attack; docs/metrics.md, Membership inference).

    The one metric that needs the model itself rather than `score`: see `eval/gradnorm.py`.
    """

    description = "gradient-norm membership AUC of the forget set against the holdout set, 0.5 at chance"

    p: float = Field(2.0, ge=1.0)  # 1, 2 or inf in OpenUnlearning

    def scores(self, subject: Subject, records: list[Record], reference: Reference) -> list[float]:
        return gradient_norms(subject, [scored_pair(r) for r in records], p=self.p)


ATTACKS: dict[str, type[MembershipAttack]] = {
    "loss": LossAttack,
    "zlib": ZlibAttack,
    "min_k": MinKAttack,
    "min_k_pp": MinKPlusPlusAttack,
}


@register_metric("privleak")
class PrivLeak(Metric):
    """(AUC_MUSE − AUC_MUSE,oracle) / AUC_MUSE,oracle × 100 from the Min-K% (k=0.4) attack.

    `reference`: the oracle Subject, its `mia_min_k` MetricResult, or its AUC as a number. There
    is no silent 0.5 fallback (OpenUnlearning's; docs/metrics.md, Deliberate differences): without
    an oracle this metric does not run.
    """

    kinds = ("qa", "passage")
    needs_reference = True
    needs_nonmembers = True
    higher_is_better = None  # closest to 0
    remembered_when = None  # closest to 0 (like the oracle) on forget data too
    description = "PrivLeak: the membership AUC's relative gap to the oracle's in percent, 0 for the oracle itself"

    attack: Literal["loss", "zlib", "min_k", "min_k_pp"] = "min_k"  # the keys of ATTACKS
    kind: Literal["auto", "qa", "passage"] = "auto"
    k: float = Field(0.4, gt=0.0, le=1.0)
    last_token: Literal["drop", "keep"] = "drop"  # Min-K's: OU drops it, MUSE keeps it
    source: str | None = None

    def _attack(self) -> MembershipAttack:
        params: dict[str, Any] = {"kind": self.kind, "source": self.source}
        if self.attack in ("min_k", "min_k_pp"):
            params |= {"k": self.k, "last_token": self.last_token}
        return ATTACKS[self.attack](**params)

    def applies(self, data: MetricInput | list[Record]) -> bool:
        return self._attack().applies(data)

    def compute(self, subject: Subject, data: MetricInput | list[Record], reference: Reference = None) -> MetricResult:
        attack = self._attack()
        ours = attack.compute(subject, data)
        if isinstance(reference, Subject):
            oracle_auc = attack.compute(reference, data).value
        elif isinstance(reference, MetricResult):
            oracle_auc = reference.value
        elif isinstance(reference, float | int):
            oracle_auc = float(reference)
        else:
            raise UnlearnkitError("privleak needs the oracle (a model, or its AUC)")
        if oracle_auc is None:
            raise UnlearnkitError("privleak: the oracle's AUC is missing")
        value = P.privleak(float(ours.value or 0.0), float(oracle_auc))
        return MetricResult(value, ours.per_item, {"auc": ours.value, "oracle_auc": oracle_auc, **ours.details})
