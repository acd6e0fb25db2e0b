"""The served model: the newest verified checkpoint behind the serving guard.

The worker swaps the model with one assignment of a (model, step) pair. A completion takes that
pair and the published guard index when it starts and keeps them to the end, so a swap (or a
change of the guard) never touches a generation in flight: the old model is freed by Python once
its last generation returns. `generation_slots` bounds how many generate at once (the CPU is
shared with the worker's training).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from unlearnkit.models.subject import GenerationSettings, Subject
from unlearnkit.service.blocking import Blocker


class NotReady(Exception):
    """No model is loaded yet (the worker is still starting)."""


@dataclass(frozen=True)
class Completion:
    text: str
    refused: bool  # answered by the guard, not the model
    step: int  # the ledger step whose checkpoint answered (0: the start model)
    prompt_tokens: int
    completion_tokens: int


class Serving:
    def __init__(self, blocker: Blocker, slots: int = 1) -> None:
        self.blocker = blocker
        self.slots = threading.BoundedSemaphore(slots)
        self.current: tuple[Subject, int] | None = None

    def swap(self, model: Subject, step: int) -> None:
        self.current = (model, step)

    @property
    def step(self) -> int | None:
        current = self.current
        return None if current is None else current[1]

    def complete(self, prompt: str, settings: GenerationSettings) -> Completion:
        current = self.current
        if current is None:
            raise NotReady("the model is still loading")
        model, step = current
        guarded = self.blocker.in_front_of(model)
        with self.slots:
            refused = guarded.refused([prompt])[0]
            text = guarded.generate([prompt], settings)[0][0]
            tokenizer = model.tokenizer
            prompt_tokens = len(tokenizer(model.render(prompt), add_special_tokens=False)["input_ids"])
            completion_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        return Completion(text, refused, step, prompt_tokens, completion_tokens)
