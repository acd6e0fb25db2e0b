"""The record schema: QA pairs, passages, multiple-choice items, and forget requests.

One `Record` class covers the three shapes so that every loader (JSONL, CSV, Parquet, ...) feeds
the same validation. Its `kind` is derived from which fields are present:

- `qa`: `question` + `answer` (optional `paraphrased_questions`, `paraphrased_answer`,
  `perturbed_answers` for the truth ratio);
- `passage`: `text`, or `prompt` + `continuation` (a passage split for verbatim checks);
- `mc`: `question` + `choices` + `answer_index` (scored like WMDP/MMLU).

`paraphrased_question` (one string, TOFU's field name) is accepted and stored as a one-element
`paraphrased_questions` list.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

RecordKind = Literal["qa", "passage", "mc"]
RequestKind = str  # "copyright", "privacy", "concept", or anything the user names
MAX_ID_CHARS = 1024  # an id is a name, not content; file names made from ids are bounded apart (names.py)


def check_id(value: str) -> str:
    """An id is non-blank, bounded, and printable: no NUL or other control characters, which
    would be invisible in every table and error line that shows it."""
    if not value.strip():
        raise ValueError("is empty")
    if len(value) > MAX_ID_CHARS:
        raise ValueError(f"{len(value)} characters, more than {MAX_ID_CHARS}")
    bad = next((c for c in value if ord(c) < 32 or 127 <= ord(c) < 160 or 0xD800 <= ord(c) < 0xE000), None)
    if bad is not None:
        what = "a lone surrogate" if ord(bad) >= 0xD800 else "the control character"
        raise ValueError(f"contains {what} U+{ord(bad):04X} at position {value.index(bad)}")
    return value


class Record(BaseModel):
    """One item of a request or a data set."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    id: str | None = None
    question: str | None = None
    answer: str | None = None
    paraphrased_questions: list[str] = Field(default_factory=list)
    paraphrased_answer: str | None = None
    perturbed_answers: list[str] = Field(default_factory=list)
    text: str | None = None
    prompt: str | None = None
    continuation: str | None = None
    choices: list[str] = Field(default_factory=list)
    answer_index: int | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    _where: str | None = PrivateAttr(default=None)  # where a loader found it: "file line 3 (id 'q7')"

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        return None if value is None else check_id(value)

    @property
    def where(self) -> str:
        """The record's place for error lines: its file, line and id where a loader read it."""
        return self._where or (f"record '{self.id}'" if self.id else "record")

    def located(self, where: str) -> Record:
        self._where = where
        return self

    def __eq__(self, other: object) -> bool:
        # Where a record was read is not part of what it is: equal fields, equal records.
        if not isinstance(other, Record):
            return NotImplemented
        return self.__dict__ == other.__dict__

    @model_validator(mode="before")
    @classmethod
    def _accept_aliases(cls, data: Any) -> Any:
        if isinstance(data, dict) and "paraphrased_question" in data:
            data = dict(data)
            single = data.pop("paraphrased_question")
            if single not in (None, ""):
                extra = single if isinstance(single, list) else [single]
                existing = data.get("paraphrased_questions")
                if existing is None or isinstance(existing, list):  # anything else: the field's own error
                    data["paraphrased_questions"] = [*(existing or []), *extra]
        return data

    @field_validator("question", "answer", "text", "prompt", "continuation", "paraphrased_answer")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is empty")
        return value

    @model_validator(mode="after")
    def _one_shape(self) -> Record:
        if self.choices:
            if self.question is None:
                raise ValueError("field 'question': missing (a multiple-choice record needs it)")
            if self.answer_index is None:
                raise ValueError("field 'answer_index': missing (a record with 'choices' needs it)")
            if not 0 <= self.answer_index < len(self.choices):
                raise ValueError(
                    f"field 'answer_index': {self.answer_index} is out of range for "
                    f"{len(self.choices)} choices"
                )
            return self
        if self.question is not None:
            if self.answer is None:
                raise ValueError("field 'answer': missing (a record with 'question' needs it)")
            if self.answer in self.perturbed_answers:
                raise ValueError("field 'perturbed_answers': contains the true answer")
            return self
        if self.answer is not None:
            raise ValueError("field 'question': missing (a record with 'answer' needs it)")
        if self.text is not None or (self.prompt is not None and self.continuation is not None):
            return self
        if self.prompt is not None or self.continuation is not None:
            missing = "continuation" if self.continuation is None else "prompt"
            raise ValueError(f"field '{missing}': missing (a split passage needs both parts)")
        raise ValueError(
            "record has none of 'question'+'answer', 'text', 'prompt'+'continuation', "
            "'question'+'choices'"
        )

    @property
    def kind(self) -> RecordKind:
        if self.choices:
            return "mc"
        return "qa" if self.question is not None else "passage"

    @property
    def passage_text(self) -> str:
        """The whole passage (for training and perplexity)."""
        if self.text is not None:
            return self.text
        return f"{self.prompt}{self.continuation}"

    def as_pair(self) -> tuple[str, str]:
        """(prompt, target) used for training and scoring: question/answer or prefix/suffix."""
        if self.kind == "qa":
            return self.question or "", self.answer or ""
        if self.kind == "mc":
            return self.question or "", self.choices[self.answer_index or 0]
        if self.prompt is not None and self.continuation is not None:
            return self.prompt, self.continuation
        return "", self.text or ""


class ForgetRequest(BaseModel):
    """One removal request: the records to forget and optional held-out probes about them."""

    model_config = ConfigDict(extra="forbid")

    id: str
    received_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    kind: RequestKind = "free"
    records: list[Record]
    probes: list[Record] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _id_not_blank(cls, value: str) -> str:
        return check_id(value)

    @field_validator("records")
    @classmethod
    def _not_empty(cls, value: list[Record]) -> list[Record]:
        if not value:
            raise ValueError("the request has no records (an empty request cannot be unlearned)")
        return value

    def content_hash(self) -> str:
        """SHA-256 of the request's records and probes (what the ledger keeps after a purge)."""
        payload = json.dumps(
            {
                "records": [r.model_dump(mode="json") for r in self.records],
                "probes": [r.model_dump(mode="json") for r in self.probes],
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


RECORD_FIELDS: tuple[str, ...] = (*Record.model_fields.keys(), "paraphrased_question")
REQUEST_FIELDS: tuple[str, ...] = tuple(ForgetRequest.model_fields.keys())
