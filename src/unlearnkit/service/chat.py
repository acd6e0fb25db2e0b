"""`POST /v1/chat/completions` in the OpenAI format, so existing clients work unchanged.

A single user message is the question; a longer conversation becomes one transcript
(`System: …`, `User: …`, `Assistant: …`), which the guard matches turn by turn (it strips role
labels) and the model reads through the plan's prompt format. Unknown fields are ignored, as
OpenAI's own server does for fields it does not use. Differences, said here once: `temperature`
defaults to 0 (greedy, reproducible); `n` is 1; `stream: true` sends the answer as server-sent
events in OpenAI's chunk format after it is generated (one content chunk, then `[DONE]`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from unlearnkit.models.subject import GenerationSettings
from unlearnkit.service.serving import Completion


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "\n".join(p.text for p in self.content)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[Message] = Field(min_length=1, max_length=64)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: Literal[1] = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False

    def prompt(self) -> str:
        if len(self.messages) == 1 and self.messages[0].role == "user":
            return self.messages[0].text
        names = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}
        return "\n".join(f"{names[m.role]}: {m.text}" for m in self.messages)

    def settings(self, cap: int) -> GenerationSettings:
        wanted = self.max_completion_tokens or self.max_tokens or cap
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return GenerationSettings(max_new_tokens=min(wanted, cap), temperature=self.temperature, top_p=self.top_p, n=1,
                                  stop=stops, seed=self.seed or 0, batch_size=1)


def response(completion: Completion, model: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": f"step-{completion.step}",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text}, "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
                  "total_tokens": completion.prompt_tokens + completion.completion_tokens},
    }


def stream(completion: Completion, model: str) -> Iterator[str]:
    """Server-sent events: the role, the content, the finish, then `[DONE]`."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "system_fingerprint": f"step-{completion.step}"}
    for delta, finish in (({"role": "assistant", "content": ""}, None), ({"content": completion.text}, None), ({}, "stop")):
        yield f"data: {json.dumps(base | {'choices': [{'index': 0, 'delta': delta, 'finish_reason': finish}]})}\n\n"
    yield "data: [DONE]\n\n"
