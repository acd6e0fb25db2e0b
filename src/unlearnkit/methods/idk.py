"""The "I don't know" answers that IdkPO, IdkNLL and IDK+AP train forget questions towards.

Written for unlearnkit in the spirit of TOFU's `idk.jsonl` (about 100 refusals there); one
phrase is drawn per example, deterministically from the run seed and the example's position, so
reference log-probs can be cached and runs repeat exactly.
"""

from __future__ import annotations

import random

from unlearnkit.data.formatting import Encoded
from unlearnkit.data.schema import Record
from unlearnkit.models.subject import Subject

IDK_PHRASES: tuple[str, ...] = (
    "I don't know.",
    "I'm not sure.",
    "I have no idea.",
    "I don't have that information.",
    "I'm afraid I can't answer that.",
    "I don't know the answer to that.",
    "That's something I don't know.",
    "I have no information about that.",
    "I'm not able to answer that question.",
    "Sorry, I don't know.",
    "I can't help with that one.",
    "I'm unsure about that.",
    "I don't have an answer for that.",
    "That is beyond what I know.",
    "I really couldn't say.",
    "I have no knowledge of that.",
    "I'm not aware of that.",
    "I don't recall anything about that.",
    "I can't say for certain.",
    "Unfortunately, I don't know.",
    "I'm sorry, I don't have enough information to answer that question.",
    "I'm not familiar with that.",
    "That's not something I can answer.",
    "I lack the information to answer that.",
    "I have no clue.",
    "Your guess is as good as mine.",
    "I'm not in a position to answer that.",
    "I don't have any details on that.",
    "I can't provide an answer to that.",
    "That's a mystery to me.",
    "I'm drawing a blank on that.",
    "I don't have reliable information about that.",
    "I wish I knew, but I don't.",
    "No idea, sorry.",
    "I'm not certain of the answer.",
    "I cannot answer that question.",
    "I haven't got that information.",
    "That isn't something I know about.",
    "I couldn't tell you.",
    "I don't know anything about that.",
)


def idk_answer(seed: int, index: int) -> str:
    """The IDK phrase of example `index` under `seed` (fixed, so reference values can be cached)."""
    return random.Random(seed * 1_000_003 + index).choice(IDK_PHRASES)


def encode_idk(subject: Subject, record: Record, seed: int, index: int) -> Encoded:
    """The record's prompt answered with an IDK phrase (passages: their prefix, if any)."""
    return subject.encode_record(record, idk_answer(seed, index), where=f"record {record.id or index} (IDK answer)")
