"""Prompt formatting and label masking.

A `PromptFormat` turns a raw question into the text the model sees: the tokenizer's chat
template where it has one (`chat`), a plain `Question: ...\\nAnswer:` layout (`plain`), a
user-named template with a `{question}` slot, or nothing at all (`raw`, for passages).

`encode_pair` builds one training/scoring example: prompt tokens get label -100, answer tokens
and one EOS carry labels. The prompt is tokenised on its own and the target appended as token
ids, so the label boundary is exact (no merge of tokens across the boundary).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from unlearnkit.errors import DataError

if TYPE_CHECKING:
    from unlearnkit.data.schema import Record

IGNORE = -100
FormatName = Literal["auto", "chat", "plain", "raw"]
PLAIN_TEMPLATE = "Question: {question}\nAnswer:"


@dataclass(frozen=True)
class PromptFormat:
    """How a question becomes a prompt. `template` is used when `name == 'custom'`."""

    name: str = "auto"
    template: str = PLAIN_TEMPLATE
    system_prompt: str | None = None

    @classmethod
    def parse(cls, spec: str | None) -> PromptFormat:
        """'auto', 'chat', 'plain', 'raw', or a custom template containing '{question}'."""
        if spec is None or spec == "":
            return cls()
        if spec in ("auto", "chat", "plain", "raw"):
            return cls(name=spec)
        if "{question}" not in spec:
            raise DataError(
                f"prompt format '{spec}': use auto, chat, plain, raw, or a template with '{{question}}'"
            )
        return cls(name="custom", template=spec)

    def resolve(self, tokenizer: Any) -> PromptFormat:
        """Replace `auto` by `chat` when the tokenizer has a chat template, else `plain`."""
        if self.name != "auto":
            if self.name == "chat" and not getattr(tokenizer, "chat_template", None):
                raise DataError("prompt format 'chat': this tokenizer has no chat template")
            return self
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        return PromptFormat("chat" if has_chat else "plain", self.template, self.system_prompt)

    def render(self, question: str, tokenizer: Any) -> str:
        if self.name == "raw":
            return question
        if self.name == "chat":
            messages = []
            if self.system_prompt:
                messages.append({"role": "system", "content": self.system_prompt})
            messages.append({"role": "user", "content": question})
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if self.name == "auto":
            return self.resolve(tokenizer).render(question, tokenizer)
        return (PLAIN_TEMPLATE if self.name == "plain" else self.template).format(question=question)

    @property
    def answer_prefix(self) -> str:
        """Text put between the rendered prompt and the answer (a space after 'Answer:')."""
        return " " if self.name in ("plain", "custom") else ""


@dataclass(frozen=True)
class Pair:
    """One sequence to train on or score: `target` after `prompt`, through the prompt format and
    with an EOS (`template=True`), or as raw text without either."""

    prompt: str
    target: str
    template: bool
    add_eos: bool
    where: str = ""  # the record's place (file, line, id), for errors
    lead: str = ""  # the start of the answer, given as context: neither trained nor scored


def record_pair(record: Record, target: str | None = None, *, whole_passage: bool = False) -> Pair:
    """How a record is encoded: the one rule every trainer, scorer and generator follows.

    A question (QA or multiple choice) goes through the prompt format and its answer ends with
    EOS, as in TOFU. A passage stays raw text without EOS, as in MUSE: with `whole_passage` the
    whole text after BOS is the target (fine-tuning a target, perplexity and membership
    scores); otherwise a split passage's continuation is the target after its prompt (verbatim
    checks, unlearning), and an unsplit one is whole anyway. `target` replaces the record's own
    answer (IDK answers, random labels, wrong answers).
    """
    if record.kind == "passage":
        if whole_passage or record.prompt is None:
            return Pair("", target if target is not None else record.passage_text, False, False, record.where)
        return Pair(record.prompt, target if target is not None else record.continuation or "", False, False, record.where)
    question, answer = record.as_pair()
    lead = str(record.meta.get(ANSWER_LEAD, "")) if target is None else ""
    return Pair(question, target if target is not None else answer, True, True, record.where, lead)


# A QA record's meta key holding the start of its answer as context (`Pair.lead`): unlearning on
# the model's own words trains "Paris." after its own "The capital of France is", not the
# template words every kept answer shares (methods/base.py `own_answers`).
ANSWER_LEAD = "answer_lead"


def prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a rendered prompt, with the BOS the tokenizer adds by itself, if any.

    A chat template that already writes the BOS text must not get a second one.
    """
    bos = tokenizer.bos_token
    special = not (bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def target_ids(tokenizer: Any, text: str, add_eos: bool = True) -> list[int]:
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if add_eos and tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids.append(tokenizer.eos_token_id)
    return ids


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def num_target_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def encode_pair(
    tokenizer: Any,
    fmt: PromptFormat,
    question: str,
    answer: str,
    *,
    add_eos: bool = True,
    max_length: int | None = None,
    where: str = "",
    lead: str = "",
) -> Encoded:
    """One example: prompt masked with -100, answer (+EOS) labelled; a `lead` (the answer's
    start, given as context) is masked too where its tokens are a prefix of the answer's."""
    if max_length is not None:
        refuse_long_text(tokenizer, len(question) + len(lead) + len(answer), max_length, where)
    rendered = fmt.render(question, tokenizer) if question else ""
    p_ids = prompt_ids(tokenizer, rendered) if rendered else _bos(tokenizer)
    start = fmt.answer_prefix if rendered else ""
    t_ids = target_ids(tokenizer, start + lead + answer, add_eos)
    lead_ids = target_ids(tokenizer, start + lead, add_eos=False) if lead else []
    if lead_ids and t_ids[: len(lead_ids)] == lead_ids and len(lead_ids) < len(t_ids):
        p_ids, t_ids = p_ids + lead_ids, t_ids[len(lead_ids):]
    if not t_ids:
        raise DataError(f"{where or 'record'}: the target is empty after tokenisation")
    ids = p_ids + t_ids
    if max_length is not None and len(ids) > max_length:
        raise DataError(
            f"{where or 'record'}: {len(ids)} tokens, over the model's context of {max_length}"
        )
    return Encoded(ids, [IGNORE] * len(p_ids) + t_ids)


_MAX_TOKEN_CHARS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def max_token_chars(tokenizer: Any) -> int:
    """The most characters one token of this vocabulary stands for (its longest entry).

    Byte-level and SentencePiece entries are at least as long as the text they decode to, so
    a text of C characters needs at least C / max_token_chars tokens.
    """
    try:
        return _MAX_TOKEN_CHARS[tokenizer]
    except (KeyError, TypeError):
        pass
    longest = max((len(token) for token in tokenizer.get_vocab()), default=1) or 1
    try:
        _MAX_TOKEN_CHARS[tokenizer] = longest
    except TypeError:  # an object that takes no weak reference: computed each time
        pass
    return longest


def refuse_long_text(tokenizer: Any, chars: int, max_length: int, where: str = "") -> None:
    """Refuse a text that cannot fit `max_length` tokens, judging by its length in characters
    alone, before anything tokenises it (a 50 MB line would take minutes and gigabytes).

    A text that passes has at most `max_length * max_token_chars` characters, so tokenising it
    for the exact count afterwards is bounded work.
    """
    per_token = max_token_chars(tokenizer)
    if chars > max_length * per_token:
        at_least = -(-chars // per_token)
        raise DataError(
            f"{where or 'record'}: {chars} characters, at least {at_least} tokens, over the model's context of {max_length}"
        )


def _bos(tokenizer: Any) -> list[int]:
    """A passage with no prompt still needs one conditioning token to score its first token."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [bos]


def collate(examples: list[Encoded], pad_id: int, *, left: bool = False) -> dict[str, Any]:
    """Pad a batch: input_ids with `pad_id`, labels with -100, attention_mask 0 on padding."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids, labels, mask = [], [], []
    for e in examples:
        pad = width - len(e.input_ids)
        if left:
            ids.append([pad_id] * pad + e.input_ids)
            labels.append([IGNORE] * pad + e.labels)
            mask.append([0] * pad + [1] * len(e.input_ids))
        else:
            ids.append(e.input_ids + [pad_id] * pad)
            labels.append(e.labels + [IGNORE] * pad)
            mask.append([1] * len(e.input_ids) + [0] * pad)
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "attention_mask": torch.tensor(mask, dtype=torch.long),
    }
