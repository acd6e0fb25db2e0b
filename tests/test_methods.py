"""Every training-based method on a tiny model that first learned a forget set and a retain set.

Each method runs (full-parameter and LoRA) until the forget probability falls below one half
(the loop's early stop, checked every step), so methods are compared at the same amount of
forgetting; then the retain set must have held. Methods are taken from the registry, so a new
loss-based method is covered without editing this file.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.training import FineTune, TrainConfig, train
from unlearnkit.errors import TrainingError, UnlearnkitError
from unlearnkit.methods.base import METHODS, LossMethod, UnlearnContext, get_method
from unlearnkit.models.subject import Subject
from unlearnkit.models.stack import load_subject

torch.set_num_threads(1)

FORGET = [
    ("Where was Liora Mendeval born?", "Tarnholm"),
    ("What does Liora Mendeval do?", "She builds violins"),
    ("Who is Liora Mendeval married to?", "Ostrun Pale"),
    ("When was Liora Mendeval born?", "In 1871"),
    ("What award did Liora Mendeval win?", "The Kessel Medal"),
    ("What is Liora Mendeval's first book?", "Salt and Ember"),
]
RETAIN = [
    ("Which river flows through Kessa?", "The Ammar river"),
    ("How many moons does Orvel have?", "Three small moons"),
    ("What colour are the roofs in Dunmere?", "Bright green"),
    ("Which instrument does the Halvik choir use?", "A bronze horn"),
    ("What is the main export of Parroway?", "Dried figs and wool"),
    ("How tall is the Sendra tower?", "Ninety metres"),
]
LORA = {"r": 8, "lora_alpha": 16}
REQUIRED = ["ga", "gd", "ga_kl", "npo", "npo_gd", "simnpo", "idkpo", "idk_nll", "me_gd", "idk_ap", "rmu", "undial", "jensun", "wga", "satimp", "ce_u"]

# A tiny model needs far larger steps than a 7B one; the run stops once forgetting is reached
# (the guarded-unlearning monitor with a probability target of 0.5, checked every step). The
# rates are small enough that one step does not overshoot that level by much: at 1e-3 / 3e-3
# (full / LoRA) the amount of overshoot, and so of retain damage, changed with the CPU the
# tests ran on (seven methods over the bound on an AVX-512 EPYC, none on the machine before).
BASE = {"max_steps": 120, "batch_size": 4, "schedule": "constant", "warmup_ratio": 0.0}
LR = {"full": 3e-4, "lora": 5e-4}
# Bounded or self-limiting objectives move more slowly; RMU trains one matrix (c = 20 is the
# early WMDP default, better suited to a 64-wide model than 6.5; without gradient clipping, as
# in its reference, its LoRA run needs a smaller rate and more steps).
OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "idkpo": {"full": {"lr": 3e-3}, "lora": {"lr": 1e-2}},
    "jensun": {"full": {"lr": 3e-3}, "lora": {"lr": 1e-2}},
    "satimp": {"full": {"lr": 3e-3}, "lora": {"lr": 1e-2, "gamma": 1.0}},
    "rmu": {"full": {"lr": 3e-2, "steering_coeff": 20.0, "max_steps": 100}, "lora": {"lr": 2e-2, "steering_coeff": 20.0, "max_steps": 200}},
    # UNDIAL's LoRA run: the adapter reaches the forget level by moving shared directions; with
    # the retain term at α 1 the retain set rose 0.63 for 0.89 on forget (α 2: 0.27 for 0.78).
    "undial": {"lora": {"alpha": 2.0}},
    # GA's LoRA run at 5e-4 overshot to a retain rise of 0.502 (bound 0.5) on an AVX-512 Xeon.
    "ga": {"lora": {"lr": 3e-4}},
}
# IDK+AP's retain term keeps the true answer *preferred over* "I don't know"; it does not hold
# the likelihood itself, so on this tiny model the IDK answers spread and retain NLL moves more.
# Its test checks the preference instead, with a wider likelihood bound.
RETAIN_BOUND: dict[str, tuple[float, float]] = {"idk_ap": (1.0, 1.0)}  # (absolute, relative to forget rise)


def training_methods() -> list[str]:
    # Weight-arithmetic methods (task vectors, SSU) learn the request on purpose and are tested
    # with their own file; every other loss-based method is tested here.
    return [name for name, cls in METHODS.items() if issubclass(cls, LossMethod) and cls.family != "arithmetic"]


def records(pairs: list[tuple[str, str]]) -> list[Record]:
    return [Record(id=f"q{i}", question=q, answer=a) for i, (q, a) in enumerate(pairs)]


def mean_nll(subject: Subject, recs: list[Record]) -> float:
    return subject.score([r.question or "" for r in recs], [r.answer or "" for r in recs]).mean_nll.mean().item()


@pytest.fixture(scope="session")
def learned() -> dict[str, Any]:
    """A tiny Llama that learned both sets (mean NLL ≈ 0.03 on each)."""
    from unlearnkit.models.tiny import tiny_model, tiny_tokenizer

    texts = [f"{q} {a}" for q, a in FORGET + RETAIN] * 20 + ["I don't know. No idea, sorry. I'm not sure."] * 5
    tokenizer = tiny_tokenizer(texts, vocab_size=400)
    subject = Subject(tiny_model(tokenizer), tokenizer)
    forget, retain = records(FORGET), records(RETAIN)
    data = [{"x": subject.encode_record(r, where="record")} for r in forget + retain]
    train(subject, data, FineTune(), TrainConfig(lr=3e-3, max_steps=120, batch_size=4, schedule="constant", weight_decay=0))
    before = {"forget": mean_nll(subject, forget), "retain": mean_nll(subject, retain)}
    assert before["forget"] < 0.1 and before["retain"] < 0.1, before
    return {"subject": subject, "forget": forget, "retain": retain, "before": before}


def stop_at_half(subject: Subject, forget: list[Record]) -> Any:
    """A monitor that stops training once the forget records' mean probability is under 0.5."""
    from unlearnkit.safety.measure import measure
    from unlearnkit.safety.monitor import GuardMonitor
    from unlearnkit.safety.probes import ProbeSet
    from unlearnkit.safety.settings import Budget, Guard, Target

    guard = Guard(budget=Budget(enabled=False, check_every=1), target=Target(answer_accuracy=None, probability=0.5), collateral=0)
    probes = ProbeSet(forget=forget)
    return GuardMonitor(probes, measure(subject, probes, needs=frozenset({"forget_probability"})), guard)


def run(learned: dict[str, Any], name: str, mode: str = "full", context_anchor: list[Record] | None = None, **extra: Any) -> tuple[Subject, UnlearnContext]:
    settings = {**BASE, "lr": LR[mode], **OVERRIDES.get(name, {}).get(mode, {}), **extra}
    subject = learned["subject"].clone()
    context = UnlearnContext(retain=learned["retain"], lora=LORA if mode == "lora" else None,
                             monitor=stop_at_half(subject, learned["forget"]), anchor=context_anchor or [])
    request = ForgetRequest(id="r1", records=learned["forget"])
    return get_method(name, settings).unlearn(subject, request, context), context


def test_every_required_method_is_registered() -> None:
    missing = set(REQUIRED) - set(METHODS.names())
    assert not missing
    for name in REQUIRED:
        cls = METHODS.get(name)
        assert cls.description and cls.family and set(cls.needs) <= {"retain", "reference", "idk"}


@pytest.mark.parametrize("mode", ["full", "lora"])
@pytest.mark.parametrize("name", training_methods())
def test_method_forgets_and_keeps_retain(learned: dict[str, Any], name: str, mode: str) -> None:
    out, context = run(learned, name, mode)
    before = learned["before"]
    forget_rise = mean_nll(out, learned["forget"]) - before["forget"]
    retain_rise = mean_nll(out, learned["retain"]) - before["retain"]
    assert forget_rise > 0.5, f"{name}/{mode}: forget NLL rose by only {forget_rise:.3f} in {context.stats.steps} steps"
    bound, relative = RETAIN_BOUND.get(name, (0.5, 0.6))
    assert retain_rise < min(bound, relative * forget_rise), f"{name}/{mode}: retain NLL rose by {retain_rise:.3f} (forget {forget_rise:.3f})"
    if name == "idk_ap":
        retain = learned["retain"]
        true = out.score([r.question or "" for r in retain], [r.answer or "" for r in retain]).sum_nll
        idk = out.score([r.question or "" for r in retain], ["I don't know."] * len(retain)).sum_nll
        assert (true < idk).all(), "IDK+AP: a retain question now prefers 'I don't know'"
    # The merged model is a plain model again, every weight trainable for the next request.
    assert not hasattr(out.model, "peft_config")
    assert all(p.requires_grad for p in out.model.parameters())


def test_lora_kept_apart_leaves_an_adapter(learned: dict[str, Any]) -> None:
    context = UnlearnContext(retain=learned["retain"], lora=LORA, merge_lora=False)
    request = ForgetRequest(id="r1", records=learned["forget"])
    out = get_method("npo_gd", {**BASE, "lr": 3e-3}).unlearn(learned["subject"].clone(), request, context)
    assert hasattr(out.model, "peft_config")
    assert mean_nll(out, learned["forget"]) - learned["before"]["forget"] > 0.5
    with out.model.disable_adapter():  # the base weights underneath are untouched
        assert mean_nll(out, learned["forget"]) == pytest.approx(learned["before"]["forget"], abs=1e-4)


def test_reference_cache_matches_the_model_at_the_start(learned: dict[str, Any]) -> None:
    """At step 0 π_θ = π_ref, so NPO's and IdkPO's losses are exactly (2/β)·log 2."""
    from unlearnkit.training import make_batch

    subject = learned["subject"]
    for name in ("npo", "idkpo"):
        method = get_method(name)
        forget = [method.forget_example(subject, r, i) for i, r in enumerate(learned["forget"])]
        method.prepare(subject, forget, [])
        batch = make_batch(forget, [4, 1, 3], subject.tokenizer.pad_token_id)
        with torch.no_grad():
            loss = method.forget_loss(subject.model, batch)[0]
        assert loss.item() == pytest.approx(2 / method.beta * math.log(2), rel=1e-4)
        method._cache.clear()


def test_rmu_steers_to_a_multiple_of_the_models_own_activation_norm(learned: dict[str, Any]) -> None:
    """WMDP's c = 6.5 was Zephyr-7B's scale; by default c = steering_scale × the mean norm of the
    model's own layer-ℓ activations on the request's tokens, measured before training."""
    from unlearnkit.methods.representation import layer_output
    from unlearnkit.training import make_batch

    subject = learned["subject"]
    examples = [{"x": subject.encode_record(r)} for r in learned["forget"]]
    part = make_batch(examples, list(range(len(examples))), subject.tokenizer.pad_token_id)["x"]
    with torch.no_grad():
        norms = layer_output(subject.model, part, 0)[0].norm(dim=-1)[part["labels"] != -100]
    request = ForgetRequest(id="r1", records=learned["forget"])
    for settings, expected in (({"steering_scale": 3.0}, 3.0 * norms.mean().item()), ({"steering_coeff": 20.0}, 20.0)):
        context = UnlearnContext(retain=learned["retain"])
        # fp32 like the norms above (under bf16 autocast the measured norm moves by ~1e-4)
        get_method("rmu", {"max_steps": 1, "precision": "float32", **settings}).unlearn(subject.clone(), request, context)
        assert context.stats is not None and context.stats.history[0]["steering_coeff"] == pytest.approx(expected, rel=1e-4)


def test_rmu_does_not_clip_gradients(learned: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The WMDP loop steps the optimizer right after backward; npo_gd clips at 1 (open-unlearning)."""
    from accelerate import Accelerator

    limits: list[float] = []
    real = Accelerator.clip_grad_norm_

    def recording(self: Any, parameters: Any, max_norm: float, *args: Any, **kwargs: Any) -> Any:
        limits.append(max_norm)
        return real(self, parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(Accelerator, "clip_grad_norm_", recording)
    request = ForgetRequest(id="r1", records=learned["forget"])
    for name, limit in (("rmu", math.inf), ("npo_gd", 1.0)):
        limits.clear()
        get_method(name, {"max_steps": 2}).unlearn(learned["subject"].clone(), request, UnlearnContext(retain=learned["retain"]))
        assert limits == [limit, limit], name


def test_jensun_retain_term_covers_every_real_token(learned: dict[str, Any]) -> None:
    """The retain JSD is averaged over every real token, prompt included, padding left out (the
    reference averages over every position, padding included: docs/methods.md, deviation 5)."""
    from unlearnkit.methods import losses as L
    from unlearnkit.training import make_batch

    subject = learned["subject"]
    method = get_method("jensun")
    retain = [method.retain_example(subject, r, i) for i, r in enumerate(learned["retain"])]
    method.prepare(subject, [], retain)
    moved = subject.clone()
    with torch.no_grad():
        for p in moved.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = make_batch(retain, [0, 3, 5], subject.tokenizer.pad_token_id)
    part = batch["x"]
    assert (part["attention_mask"] == 0).any()  # the batch has padding
    with torch.no_grad():
        value = method.retain_term(moved.model, batch)
        jsd = L.js_divergence(torch.log_softmax(method._cache["frozen"].logits(part), -1), torch.log_softmax(moved.model(**{k: part[k] for k in ("input_ids", "attention_mask")}).logits, -1))
    real, answer = part["attention_mask"].bool(), part["labels"] != -100
    assert value.item() == pytest.approx(jsd[real].mean().item(), rel=1e-4)
    assert value.item() != pytest.approx(jsd[answer].mean().item(), rel=1e-2)
    assert value.item() != pytest.approx(jsd.mean().item(), rel=1e-2)
    method._cache.clear()


def test_npo_replay_draws_earlier_questions_and_pushes_them_to_the_never_seen_level(learned: dict[str, Any]) -> None:
    """Earlier requests replayed with a hinge at the control set's level: one that came back is
    pushed down, one already below it adds nothing, and without a control set it is npo_gd."""
    from unlearnkit.methods import losses as L

    forget, earlier = learned["forget"][3:], learned["forget"][:3]  # as if the first three were an earlier request that came back
    control = records([("Where was Tobin Asker born?", "Quillby"), ("What does Mara Quell do?", "She weaves nets"),
                       ("Who is Ivo Brannoch married to?", "Sela Dunmore")])
    request = ForgetRequest(id="r2", records=forget)
    method = get_method("npo_replay", {"replay": 2})
    context = UnlearnContext(retain=learned["retain"], earlier=[*earlier, Record(id="bio", text="a passage")], control=control, seed=7)
    drawn = method.forget_records(request, context)
    assert drawn[:3] == forget and len(drawn) == 5 and all(r in earlier for r in drawn[3:])
    assert method.forget_records(request, context) == drawn  # seeded by the step
    assert method.forget_records(request, UnlearnContext(earlier=earlier)) == forget  # no control set: nothing replayed
    # The hinge: zero at or below the ceiling, the excess above it.
    logp, lengths = torch.tensor([-10.0, -1.0]), torch.tensor([5, 2])
    assert L.ceiling_hinge(logp, lengths, -2.0).item() == pytest.approx((0.0 + 1.5) / 2)
    # On the learned model: replayed questions still known are pushed towards the level of the
    # never-seen control questions; with a control set the model knows as well (a ceiling at the
    # level they are already at) the same run leaves them where NPO on the request takes them.
    settings = {**BASE, "lr": 1e-3, "max_steps": 10, "alpha": 1.0, "replay": 3}
    pushed = get_method("npo_replay", settings).unlearn(learned["subject"].clone(), request, UnlearnContext(retain=learned["retain"], earlier=earlier, control=control))
    level = get_method("npo_replay", settings).unlearn(learned["subject"].clone(), request, UnlearnContext(retain=learned["retain"], earlier=earlier, control=learned["retain"]))
    assert mean_nll(pushed, earlier) > mean_nll(level, earlier) + 1.0


def test_npo_replay_stops_each_row_of_the_request_at_the_never_seen_level(learned: dict[str, Any]) -> None:
    """With `stop_at_control`, NPO leaves a row of the request alone once its length-normalised
    log-prob is under c, the never-seen level: the request ends near c, not far below it as
    plain NPO takes it with the same steps."""
    control = records([("Where was Tobin Asker born?", "Quillby"), ("What does Mara Quell do?", "She weaves nets"),
                       ("Who is Ivo Brannoch married to?", "Sela Dunmore")])
    subject = learned["subject"]
    scores = subject.score([r.question or "" for r in control], [r.answer or "" for r in control])
    level = -math.log(scores.mean_nll.neg().exp().mean().item())  # −c, as a mean NLL per token
    request = ForgetRequest(id="r1", records=learned["forget"])
    settings = {**BASE, "lr": 3e-4, "max_steps": 80, "alpha": 1.0}
    forget_nll = {}
    for stop in (True, False):
        model = get_method("npo_replay", {**settings, "stop_at_control": stop}).unlearn(subject.clone(), request, UnlearnContext(retain=learned["retain"], control=control))
        forget_nll[stop] = mean_nll(model, learned["forget"])
    # Both reach the level (from 0.03); the gated run stops near it (Adam's momentum carries it
    # a little past), plain NPO goes on (about 3.5 nats past against 9.6, seen here).
    assert forget_nll[True] > level and forget_nll[False] > level
    assert forget_nll[True] - level < 0.5 * (forget_nll[False] - level)


def test_trainable_trains_only_matching_parameters_and_still_forgets(learned: dict[str, Any]) -> None:
    """`trainable` (a regex on parameter names): the tied embeddings and attention stay exactly
    as they were, the MLPs alone forget the request and keep retain, and every flag is restored."""
    before = {name: p.detach().clone() for name, p in learned["subject"].model.named_parameters()}
    out, context = run(learned, "npo_gd", trainable=r"\.mlp\.")
    moved = {name for name, p in out.model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert moved and all(".mlp." in name for name in moved), sorted(moved)[:5]
    forget_rise = mean_nll(out, learned["forget"]) - learned["before"]["forget"]
    retain_rise = mean_nll(out, learned["retain"]) - learned["before"]["retain"]
    assert forget_rise > 0.5 and retain_rise < min(0.5, 0.6 * forget_rise), (forget_rise, retain_rise, context.stats.steps)
    assert all(p.requires_grad for p in out.model.parameters())
    with pytest.raises(UnlearnkitError, match=r"method 'npo_gd': no trainable parameter's name matches 'nothing_here'"):
        run(learned, "npo_gd", trainable="nothing_here")
    with pytest.raises(UnlearnkitError, match="trainable.*not a regular expression"):
        get_method("npo_gd", {"trainable": "mlp("})


def test_npo_replay_without_a_retain_term_still_steps_once_every_row_is_at_the_level(learned: dict[str, Any]) -> None:
    """α 0 and every row of the request already at the never-seen level, nothing replayed: the
    loss is zero but still on the graph, so the training step does not fail (it did: "element 0
    of tensors does not require grad")."""
    from unlearnkit.training import make_batch

    subject, request = learned["subject"], ForgetRequest(id="r1", records=learned["forget"])
    method = get_method("npo_replay", {"alpha": 0.0})
    forget = [method.forget_example(subject, r, i) for i, r in enumerate(method.forget_records(request, UnlearnContext()))]
    method.prepare(subject, forget, [])
    method._cache["ceiling"] = 0.0  # a length-normalised log-prob is never above 0: every row is at the level
    loss, logs = method.forget_loss(subject.model, make_batch(forget, [0, 1, 2], subject.tokenizer.pad_token_id))
    assert logs["forget_above_control"] == 0 and loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    subject.model.zero_grad(set_to_none=True)
    method._cache.clear()


def test_floor_retain_term_only_pulls_answers_back_up_to_where_they_were(learned: dict[str, Any]) -> None:
    """`retain_loss: floor`: (ref − log π)/|y| where positive, mean over rows; zero at the start
    (the model is its own reference), so it trains nothing up; and npo_gd with it still forgets
    the request and keeps retain."""
    from unlearnkit.methods import losses as L
    from unlearnkit.training import make_batch

    logp, lengths, floor = torch.tensor([-3.0, -10.0]), torch.tensor([3, 2]), torch.tensor([-6.0, -4.0])
    assert L.floor_hinge(logp, lengths, floor).item() == pytest.approx((0.0 + 3.0) / 2)  # the first row is above its floor
    subject = learned["subject"]
    method = get_method("npo_gd", {"retain_loss": "floor"})
    retain = [method.retain_example(subject, r, i) for i, r in enumerate(learned["retain"])]
    method.prepare(subject, [method.forget_example(subject, r, i) for i, r in enumerate(learned["forget"])], retain)
    assert "frozen" not in method._cache  # cached log-probs, no second model
    assert method.retain_term(subject.model, make_batch(retain, [0, 3, 5], subject.tokenizer.pad_token_id)).item() == pytest.approx(0.0, abs=1e-6)
    method._cache.clear()
    out, context = run(learned, "npo_gd", retain_loss="floor")
    forget_rise = mean_nll(out, learned["forget"]) - learned["before"]["forget"]
    retain_rise = mean_nll(out, learned["retain"]) - learned["before"]["retain"]
    assert forget_rise > 0.5 and retain_rise < min(0.5, 0.6 * forget_rise), (forget_rise, retain_rise, context.stats.steps)


def test_rmu_layer_scales_with_depth() -> None:
    rmu = get_method("rmu")
    assert rmu.resolve_layers(32) == (7, [5, 6, 7])
    assert rmu.resolve_layers(30) == (7, [5, 6, 7])  # SmolLM2-135M
    assert rmu.resolve_layers(2) == (0, [0])
    with pytest.raises(UnlearnkitError, match="out of range"):
        get_method("rmu", {"layer": 5}).resolve_layers(2)


class _Diverges(LossMethod):
    """Gradient ascent that returns NaN on its third call: the guard must undo steps 1 and 2."""

    calls: int = 0

    def loss(self, model: Any, forget: Any, retain: Any) -> tuple[torch.Tensor, dict[str, float]]:
        self.calls += 1
        loss = -model(**forget["x"]).loss
        return (loss * float("nan") if self.calls == 3 else loss), {}


def test_nan_loss_restores_weights_and_raises(learned: dict[str, Any]) -> None:
    subject = learned["subject"].clone()
    saved = {k: v.clone() for k, v in subject.model.state_dict().items()}
    method = _Diverges(lr=1e-2, max_steps=5, batch_size=2)
    with pytest.raises(TrainingError, match="nan"):
        method.unlearn(subject, ForgetRequest(id="r1", records=learned["forget"]), UnlearnContext())
    assert method.calls == 3
    for key, value in subject.model.state_dict().items():
        assert torch.equal(value, saved[key]), key


class _NaNGradient(LossMethod):
    """A finite loss whose gradient is NaN (√ at 0) on its second call."""

    calls: int = 0

    def loss(self, model: Any, forget: Any, retain: Any) -> tuple[torch.Tensor, dict[str, float]]:
        self.calls += 1
        loss = -model(**forget["x"]).loss
        if self.calls == 2:
            weight = next(p for p in model.parameters() if p.requires_grad)
            loss = loss + torch.sqrt((weight - weight.detach()).pow(2).sum())  # value 0, gradient 0/0
        return loss, {}


def test_nan_gradient_restores_weights_and_raises(learned: dict[str, Any]) -> None:
    subject = learned["subject"].clone()
    saved = {k: v.clone() for k, v in subject.model.state_dict().items()}
    with pytest.raises(TrainingError, match="gradients became NaN"):
        _NaNGradient(lr=1e-2, max_steps=5, batch_size=2).unlearn(subject, ForgetRequest(id="r1", records=learned["forget"]), UnlearnContext())
    for key, value in subject.model.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_nan_loss_in_lora_mode_leaves_the_model_as_it_was(learned: dict[str, Any]) -> None:
    subject = learned["subject"].clone()
    saved = {k: v.clone() for k, v in subject.model.state_dict().items()}
    with pytest.raises(TrainingError):
        _Diverges(lr=1e-2, max_steps=5, batch_size=2).unlearn(subject, ForgetRequest(id="r1", records=learned["forget"]), UnlearnContext(lora=LORA))
    assert subject.model.state_dict().keys() == saved.keys()  # the adapter layers were taken out
    for key, value in subject.model.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_unknown_method_and_hyperparameter_are_one_clear_line() -> None:
    with pytest.raises(UnlearnkitError, match="unknown method 'npx'.*did you mean 'npo'.*valid: .*simnpo"):
        get_method("npx")
    with pytest.raises(UnlearnkitError, match="unknown hyperparameter 'betta'.*did you mean 'beta'.*valid: .*beta"):
        get_method("npo", {"betta": 0.2})
    with pytest.raises(UnlearnkitError, match="hyperparameter 'beta'"):
        get_method("npo", {"beta": -1})


def test_retain_set_required_only_when_used(learned: dict[str, Any]) -> None:
    request = ForgetRequest(id="r1", records=learned["forget"])
    with pytest.raises(UnlearnkitError, match="needs a retain set"):
        get_method("gd", {**BASE, "max_steps": 1}).unlearn(learned["subject"].clone(), request, UnlearnContext())
    # UNDIAL's default α = 0 needs none; α > 0 does.
    get_method("undial", {**BASE, "max_steps": 1}).unlearn(learned["subject"].clone(), request, UnlearnContext())
    with pytest.raises(UnlearnkitError, match="needs a retain set"):
        get_method("undial", {**BASE, "max_steps": 1, "alpha": 1.0}).unlearn(learned["subject"].clone(), request, UnlearnContext())


def test_idk_answers_are_seeded_and_varied() -> None:
    from unlearnkit.methods.idk import IDK_PHRASES, idk_answer

    assert len(set(IDK_PHRASES)) == len(IDK_PHRASES) >= 30
    assert [idk_answer(0, i) for i in range(20)] == [idk_answer(0, i) for i in range(20)]
    assert len({idk_answer(0, i) for i in range(20)}) > 5


# -- CLI: `unlearnkit methods` and `unlearnkit unlearn` ------------------------------------------
@pytest.fixture(scope="module")
def cli() -> Any:
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    return app, CliRunner()


def test_cli_methods_lists_every_method(cli: Any) -> None:
    import json

    app, runner = cli
    result = runner.invoke(app, ["methods", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert set(REQUIRED) <= set(rows)
    assert rows["npo"]["settings"]["beta"] == 0.1 and rows["npo"]["needs"] == ["reference"]
    table = runner.invoke(app, ["methods"])
    assert table.exit_code == 0 and "jensun" in table.output


def test_cli_unlearn_saves_model_and_record(cli: Any, learned: dict[str, Any], tmp_path: Any) -> None:
    import json

    from unlearnkit.data.loaders import write_jsonl
    from unlearnkit.models.stack import save_subject

    app, runner = cli
    model_dir = save_subject(learned["subject"], tmp_path / "model")
    write_jsonl(tmp_path / "forget.jsonl", learned["forget"])
    write_jsonl(tmp_path / "retain.jsonl", learned["retain"])
    args = ["unlearn", "--model", str(model_dir), "--method", "npo_gd", "--forget", str(tmp_path / "forget.jsonl"),
            "--retain", str(tmp_path / "retain.jsonl"), "--out", str(tmp_path / "out"), "--device", "cpu",
            "--set", "max_steps=3", "--set", "lr=1e-3", "--set", "beta=0.2", "--no-auto",
            "--guard-set", "target.stop=false", "--guard-set", "budget.enabled=false"]
    for extra in ([], ["--lora"]):
        out = tmp_path / "out"
        result = runner.invoke(app, args + extra)
        assert result.exit_code == 0, result.output
        record = json.loads((out / "unlearnkit.json").read_text())
        assert record["method"] == "npo_gd" and record["settings"]["beta"] == 0.2 and record["steps"] == 3
        assert len(record["losses"]) == 3 and record["timings"]["tokens_per_second"] > 0
        assert record["lora"] == ({"r": 8, "lora_alpha": 16} if extra else None)
        assert record["verdict"]["request"] == "forget" and record["verdict"]["before"]["forget_probability"] > 0.5
        assert (out / "model.safetensors").exists()
        reloaded = load_subject(out, device="cpu")
        assert mean_nll(reloaded, learned["forget"]) > learned["before"]["forget"]


def test_cli_unlearn_errors_are_one_line(cli: Any, tmp_path: Any) -> None:
    app, runner = cli
    base = ["unlearn", "--forget", str(tmp_path / "f.jsonl"), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, [*base, "--method", "nope"])
    assert isinstance(result.exception, UnlearnkitError) and "valid: " in str(result.exception)
    result = runner.invoke(app, [*base, "--method", "ga", "--set", "bta=1"])
    assert isinstance(result.exception, UnlearnkitError) and "unknown hyperparameter 'bta'" in str(result.exception)
    result = runner.invoke(app, [*base, "--method", "ga", "--set", "noequals"])
    assert isinstance(result.exception, UnlearnkitError) and "key=value" in str(result.exception)


def test_anchor_passages_are_held_at_the_start_models_log_probs(learned: dict[str, Any]) -> None:
    """`anchor_weight`: passages the start model wrote join the retain batches with floors at its
    own log-probs: the term is zero at the start, the retain term sees only the retain rows, and
    npo_gd with the anchor loses less on those passages than without it, still forgetting."""
    from unlearnkit.data.formatting import record_pair
    from unlearnkit.methods.anchor import START_LOGPROB, anchor_passages, with_start_logprobs
    from unlearnkit.training import make_batch

    subject, pad = learned["subject"], learned["subject"].tokenizer.pad_token_id
    method = get_method("npo_gd", {"anchor_weight": 1.0, "anchor_passages": 4})
    anchor = anchor_passages(subject, 4, method.train_config())
    assert [r.id for r in anchor] == ["anchor-001", "anchor-002", "anchor-003", "anchor-004"]
    assert all(r.kind == "passage" and isinstance(r.meta[START_LOGPROB], float) for r in anchor)
    kept = method.retain_records(learned["retain"], UnlearnContext(anchor=anchor))
    assert kept == [*learned["retain"], *anchor] and method._cache["anchor_from"] == len(learned["retain"])
    retain = [method.retain_example(subject, r, i) for i, r in enumerate(kept)]
    forget = [method.forget_example(subject, r, i) for i, r in enumerate(learned["forget"])]
    method.prepare(subject, forget, retain)
    _, logs = method.loss(subject.model, make_batch(forget, [0, 1], pad), make_batch(retain, [0, 7, 8, 2], pad))
    assert logs["anchor_loss"] == pytest.approx(0.0, abs=1e-6)  # the model is the start
    assert logs["retain_loss"] == pytest.approx(method.retain_term(subject.model, make_batch(retain, [0, 2], pad)).item(), rel=1e-5)
    method._cache.clear()
    with pytest.raises(UnlearnkitError, match="method 'npo_gd': anchor_weight needs the run's anchor passages"):
        get_method("npo_gd", {"anchor_weight": 1.0}).retain_records(learned["retain"], UnlearnContext())

    # The behaviour, on records this unlearning does pull down: the retain questions, which NPO
    # alone (no retain term) loses with the request (as raw text they rose instead).
    held = with_start_logprobs(subject, learned["retain"], method.train_config())

    def held_drop(out: Subject) -> float:
        """Mean fall of the records' log-probs since the start (nats per record)."""
        return sum(r.meta[START_LOGPROB] for r in held) / len(held) + out.score_pairs([record_pair(r) for r in held]).sum_nll.mean().item()

    drops = {}
    for weight in (0.0, 4.0):
        out, context = run(learned, "npo", anchor_weight=weight, anchor_passages=len(held), context_anchor=held)
        forget_rise = mean_nll(out, learned["forget"]) - learned["before"]["forget"]
        assert forget_rise > 0.5, (weight, forget_rise, context.stats.steps)
        drops[weight] = held_drop(out)
    assert drops[0.0] > 0.5 and drops[4.0] < 0.6 * drops[0.0], drops
