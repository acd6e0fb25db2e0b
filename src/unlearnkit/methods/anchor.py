"""Anchor passages: general text the run's start model wrote itself, with its log-probs on it.

Over a request stream, general-text perplexity rose a few tenths of a percent per request with
every recipe measured (docs/sequential.md, "What costs fluency over a stream"): each request is
held to the model just before it, so small losses add up. The retain set is questions about
people and does not cover general text. A method with `anchor_weight` > 0 (methods/gradient.py)
trains these passages with a floor at the **run's start**: a passage whose mean token log-prob
fell below where the start model had it is pulled back, none is trained above it. Because the
floor is the start's, not the previous step's, the loss cannot drift away step by step.

The passages are the start model's greedy answers to "Write a short paragraph about <topic>." on
everyday topics, chosen away from the evaluation's general text (scikit-learn's data set
descriptions: flowers, wine, houses, medicine), so the anchor does not train on what is
measured. A sequential run writes them once (`anchor-passages.jsonl` in the run folder) and
hands them to every step in `UnlearnContext.anchor`.
"""

from __future__ import annotations

from unlearnkit.data.schema import Record
from unlearnkit.models.subject import Subject
from unlearnkit.training import TrainConfig, loss_pass

ANCHOR_TOPICS = (
    "the history of bicycles", "how bread is baked", "the water cycle", "learning a new language",
    "the rules of chess", "volcanoes", "the moon", "saving money", "trains", "the ocean", "friendship",
    "a rainy day in a city", "the printing press", "how bees make honey", "mountains", "music",
    "the first day of school", "the importance of sleep", "rivers", "the solar system", "photography",
    "football", "libraries", "computers", "a market in the morning", "the desert", "recycling",
    "airplanes", "painting", "winter", "birds", "the telephone",
)
ANCHOR_TOKENS = 64
# Record meta key: the passage's log-prob (summed over its tokens) under the run's start model.
START_LOGPROB = "start_logprob"


def anchor_passages(start: Subject, count: int, config: TrainConfig) -> list[Record]:
    """`count` passages the start model writes (greedy, so a rerun writes the same), each with
    its log-prob under that model."""
    topics = ANCHOR_TOPICS[:count]
    texts = start.greedy([f"Write a short paragraph about {topic}." for topic in topics], max_new_tokens=ANCHOR_TOKENS)
    records = [Record(id=f"anchor-{i + 1:03d}", text=text.strip(), meta={"split": "anchor", "type": "text", "topic": topic})
               for i, (topic, text) in enumerate(zip(topics, texts)) if text.strip()]
    return with_start_logprobs(start, records, config)


def with_start_logprobs(start: Subject, records: list[Record], config: TrainConfig) -> list[Record]:
    """The records with their log-prob under `start` (meta `START_LOGPROB`), computed as training
    computes it (`loss_pass(config)`), on the example a method trains (`retain_example`)."""
    from unlearnkit.methods.gradient import reference_logprobs

    if not records:
        return []
    examples = [{"x": start.encode_record(r, where=f"anchor passage {r.id}")} for r in records]
    with loss_pass(config, start.device):
        logp = reference_logprobs(start, examples, "x")
    return [r.model_copy(update={"meta": {**r.meta, START_LOGPROB: float(v)}}) for r, v in zip(records, logp)]
