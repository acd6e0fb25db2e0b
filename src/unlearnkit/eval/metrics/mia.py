"""Membership inference (metrics.md §3) and PrivLeak (§2.4, §4.3).

Each attack gives every record a loss-like score (higher = "less likely a member"); the metric
value is the AUC of members (`data.records`, the forget set) against non-members
(`data.nonmembers`, never trained) in OU's convention: 1 = members recognised, 0.5 = chance.

QA records are scored on the answer (+EOS) given the templated question, passages on the whole
text after BOS; `kind` picks one ("auto": passages when both sides have some, else QA). All
scored tokens count (OU drops the last one, §7.7; see docs/metrics.md).
"""

from __future__ import annotations

from typing import Any

from unlearnkit.data.schema import Record
from unlearnkit.errors import UnlearnkitError
from unlearnkit.eval import primitives as P
from unlearnkit.eval.gradnorm import gradient_norms
from unlearnkit.eval.metric import Metric, MetricInput, MetricResult, Reference, item_id, register_metric
from unlearnkit.eval.metrics._common import Pair, mean_nll, score_pairs, scored_pair
from unlearnkit.models.subject import Subject


class MembershipAttack(Metric):
    """Base: subclasses define `scores(subject, records, reference)`."""

    kinds = ("qa", "passage")
    needs_nonmembers = True
    higher_is_better = None  # toward the oracle's AUC (≈0.5 for a model that never saw the data)
    uses_stats = False

    def __init__(self, kind: str = "auto", **params: Any) -> None:
        if kind not in ("auto", "qa", "passage"):
            raise UnlearnkitError(f"{type(self).__name__}: kind '{kind}' (use auto, qa or passage)")
        super().__init__(kind=kind, **params)

    def chosen_kind(self, data: MetricInput) -> str:
        if self.params["kind"] != "auto":
            return self.params["kind"]
        both = all(any(r.kind == "passage" for r in side) for side in (data.records, data.nonmembers))
        return "passage" if both else "qa"

    def split(self, data: MetricInput | list[Record]) -> tuple[list[Record], list[Record]]:
        data = MetricInput.of(data)
        kind = self.chosen_kind(data)
        return [r for r in data.records if r.kind == kind], [r for r in data.nonmembers if r.kind == kind]

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
    def scores(self, subject: Subject, records: list[Record], reference: Reference) -> list[float]:
        return [P.loss_score(s.logprobs) for s in self._scored(subject, records)]


@register_metric("mia_zlib")
class ZlibAttack(MembershipAttack):
    def scores(self, subject: Subject, records: list[Record], reference: Reference) -> list[float]:
        pairs: list[Pair] = [scored_pair(r) for r in records]
        return [P.zlib_score(s.logprobs, p.target) for s, p in zip(self._scored(subject, records), pairs)]


@register_metric("mia_min_k")
class MinKAttack(MembershipAttack):
    def __init__(self, k: float = 0.4, **params: Any) -> None:
        super().__init__(k=k, **params)

    def scores(self, subject: Subject, records: list[Record], reference: Reference) -> list[float]:
        return [P.min_k_score(s.logprobs, self.params["k"]) for s in self._scored(subject, records)]


@register_metric("mia_min_k_pp")
class MinKPlusPlusAttack(MinKAttack):
    uses_stats = True

    def scores(self, subject: Subject, records: list[Record], reference: Reference) -> list[float]:
        return [P.min_k_plus_plus_score(s.logprobs, s.mu, s.sigma, self.params["k"]) for s in self._scored(subject, records)]


@register_metric("mia_reference")
class ReferenceAttack(MembershipAttack):
    """L̄_target − L̄_reference; `reference` is the reference model (OU suggests the retain model)."""

    needs_reference = True

    def scores(self, subject: Subject, records: list[Record], reference: Reference) -> list[float]:
        if not isinstance(reference, Subject):
            raise UnlearnkitError("mia_reference needs a reference model (for example the oracle)")
        ours = [mean_nll(s) for s in self._scored(subject, records)]
        theirs = [mean_nll(s) for s in self._scored(reference, records)]
        return [P.reference_score(a, b) for a, b in zip(ours, theirs)]


@register_metric("mia_gradnorm")
class GradNormAttack(MembershipAttack):
    """Mean over parameter tensors of the gradient p-norm of the item's mean NLL (§3.7).

    The one metric that needs the model itself rather than `score`: see `eval/gradnorm.py`.
    """

    def __init__(self, p: float = 2.0, **params: Any) -> None:
        super().__init__(p=p, **params)

    def scores(self, subject: Subject, records: list[Record], reference: Reference) -> list[float]:
        return gradient_norms(subject, [scored_pair(r) for r in records], p=self.params["p"])


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
    is no silent 0.5 fallback (OU's, §7.11): without an oracle this metric does not run.
    """

    kinds = ("qa", "passage")
    needs_reference = True
    needs_nonmembers = True
    higher_is_better = None  # closest to 0

    def __init__(self, attack: str = "min_k", kind: str = "auto", k: float = 0.4, **params: Any) -> None:
        if attack not in ATTACKS:
            raise UnlearnkitError(f"privleak: attack '{attack}' (use one of {', '.join(ATTACKS)})")
        super().__init__(attack=attack, kind=kind, k=k, **params)

    def _attack(self) -> MembershipAttack:
        params = {"kind": self.params["kind"]}
        if self.params["attack"] in ("min_k", "min_k_pp"):
            params["k"] = self.params["k"]
        return ATTACKS[self.params["attack"]](**params)

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
