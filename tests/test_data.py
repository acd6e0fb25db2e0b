"""Record schema and loaders: every format loads, every bad input is one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearnkit.data.formatting import IGNORE, PromptFormat, encode_pair
from unlearnkit.data.loaders import load_records, load_requests, write_jsonl
from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.errors import DataError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
QA = {"id": "q1", "question": "Where was X born?", "answer": "In Tarnholm.", "perturbed_answers": ["In Osterfal.", "In Vennmark."]}


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, rows: list[dict]) -> Path:
    return write(path, "\n".join(json.dumps(r) for r in rows) + "\n")


# -- good input ------------------------------------------------------------------------------


def test_examples_load() -> None:
    requests = load_requests(EXAMPLES / "requests.jsonl")
    assert [r.id for r in requests] == ["req-privacy-1", "req-copyright-1"]
    assert requests[0].records[0].kind == "qa"
    assert requests[1].records[0].kind == "passage"
    assert requests[0].probes[0].answer == "Glassblowing."
    retain = load_records(EXAMPLES / "retain.jsonl")
    assert [r.kind for r in retain] == ["qa", "qa", "qa", "passage"]


def test_same_records_from_every_format(tmp_path: Path) -> None:
    import datasets
    import pandas as pd

    rows = [QA, {"id": "p1", "prompt": "Once upon", "continuation": " a time."}, {"id": "m1", "question": "2+2?", "choices": ["3", "4"], "answer_index": 1}]
    expected = [Record.model_validate(r) for r in rows]
    jsonl(tmp_path / "a.jsonl", rows)
    write(tmp_path / "a.json", json.dumps(rows))
    flat = [{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()} for r in rows]
    pd.DataFrame(flat).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "a.parquet")
    datasets.Dataset.from_pandas(pd.DataFrame(rows)).save_to_disk(str(tmp_path / "ds"))
    for name in ("a.jsonl", "a.json", "a.csv", "a.parquet", "ds"):
        assert load_records(tmp_path / name) == expected, name


def test_paraphrased_question_alias_and_kinds() -> None:
    record = Record.model_validate({"question": "Q?", "answer": "A", "paraphrased_question": "Q again?"})
    assert record.paraphrased_questions == ["Q again?"]
    assert Record(text="hello").kind == "passage"
    assert Record(question="Q", choices=["a", "b"], answer_index=0).as_pair() == ("Q", "a")


def test_plain_records_file_becomes_one_request(tmp_path: Path) -> None:
    requests = load_requests(jsonl(tmp_path / "takedown-7.jsonl", [QA]), kind="copyright")
    assert len(requests) == 1 and requests[0].id == "takedown-7" and requests[0].kind == "copyright"


def test_request_folder_in_name_order(tmp_path: Path) -> None:
    jsonl(tmp_path / "b.jsonl", [QA])
    jsonl(tmp_path / "a.jsonl", [QA])
    assert [r.id for r in load_requests(tmp_path)] == ["a", "b"]


def test_content_hash_and_roundtrip(tmp_path: Path) -> None:
    requests = load_requests(EXAMPLES / "requests.jsonl")
    write_jsonl(tmp_path / "out.jsonl", requests)
    again = load_requests(tmp_path / "out.jsonl")
    assert [r.content_hash() for r in again] == [r.content_hash() for r in requests]
    assert requests[0].content_hash() != requests[1].content_hash()


# -- bad input: one line naming file, record and field ---------------------------------------

BAD_RECORD_FILES = [
    ("empty file", "a.jsonl", "", r"a\.jsonl: the file is empty"),
    ("blank lines only", "a.jsonl", "\n\n  \n", r"a\.jsonl: the file is empty"),
    ("invalid json", "a.jsonl", json.dumps(QA) + "\n{not json\n", r"a\.jsonl line 2: invalid JSON"),
    ("not an object", "a.jsonl", "[1, 2]\n", r"a\.jsonl line 1: expected a JSON object, got a list"),
    ("missing answer", "a.jsonl", json.dumps({"id": "q7", "question": "Q?"}), r"a\.jsonl line 1 \(id 'q7'\): field 'answer': missing"),
    ("answer without question", "a.jsonl", json.dumps({"answer": "A"}), r"line 1: field 'question': missing"),
    ("wrong type", "a.jsonl", json.dumps({"question": "Q?", "answer": 42}), r"line 1: field 'answer': .*string.*"),
    ("unknown column, did you mean", "a.jsonl", json.dumps({"question": "Q?", "anwser": "A"}), r"unknown field 'anwser' \(did you mean 'answer'\?\)"),
    ("empty answer", "a.jsonl", json.dumps({"question": "Q?", "answer": "  "}), r"field 'answer': is empty"),
    ("truth among wrong answers", "a.jsonl", json.dumps({"question": "Q?", "answer": "A", "perturbed_answers": ["B", "A"]}), r"field 'perturbed_answers': contains the true answer"),
    ("half a split passage", "a.jsonl", json.dumps({"prompt": "Once"}), r"field 'continuation': missing"),
    ("no known shape", "a.jsonl", json.dumps({"id": "x", "meta": {}}), r"line 1 \(id 'x'\): record has none of"),
    ("choice index out of range", "a.jsonl", json.dumps({"question": "Q", "choices": ["a"], "answer_index": 3}), r"field 'answer_index': 3 is out of range"),
    ("duplicate record id", "a.jsonl", json.dumps(QA) + "\n" + json.dumps(QA), r"line 2: duplicate record id 'q1' \(first at line 1\)"),
    ("undecodable bytes", "a.jsonl", b'{"question": "Q?", "answer": "caf\xe9"}\n', r"a\.jsonl line 1: not valid UTF-8"),
    ("unknown file type", "a.txt", "hello", r"a\.txt: unknown file type '\.txt'"),
    ("csv with extra cells", "a.csv", "question,answer\nQ?,A,extra\n", r"a\.csv line 2: more cells than header columns"),
    ("csv unknown column", "a.csv", "question,answr\nQ?,A\n", r"a\.csv line 2: unknown field 'answr' \(did you mean 'answer'\?\)"),
    ("corrupt parquet", "a.parquet", b"PAR1garbage", r"a\.parquet: not a readable Parquet file"),
    ("json not a list", "a.json", '"just a string"', r"a\.json: expected a JSON object or a list"),
]


@pytest.mark.parametrize("name,filename,content,pattern", BAD_RECORD_FILES, ids=[b[0] for b in BAD_RECORD_FILES])
def test_bad_record_files(tmp_path: Path, name: str, filename: str, content: str | bytes, pattern: str) -> None:
    path = write(tmp_path / filename, content)
    with pytest.raises(DataError, match=pattern) as info:
        load_records(path)
    assert "\n" not in str(info.value)
    assert filename in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.jsonl: no such file or folder"):
        load_records(tmp_path / "nope.jsonl")


BAD_REQUESTS = [
    ("empty request", [{"id": "r1", "records": []}], r"line 1 \(id 'r1'\): field 'records': .*empty request"),
    ("duplicate request id", [{"id": "r1", "records": [QA]}, {"id": "r1", "records": [QA]}], r"duplicate request id 'r1'"),
    ("records not a list", [{"id": "r1", "records": "QA"}], r"field 'records': expected a list of records, got a string"),
    ("bad record inside", [{"id": "r1", "records": [{"question": "Q"}]}], r"line 1 \(id 'r1'\) records\[0\]: field 'answer': missing"),
    ("bad probe inside", [{"id": "r1", "records": [QA], "probes": [{"answer": "A"}]}], r"probes\[0\]: field 'question': missing"),
    ("mixed requests and records", [{"id": "r1", "records": [QA]}, QA], r"line 2 \(id 'q1'\): field 'records': missing"),
    ("bad date", [{"id": "r1", "records": [QA], "received_at": "yesterday"}], r"field 'received_at'"),
    ("unknown request field", [{"id": "r1", "records": [QA], "recieved_at": "2026-01-01"}], r"unknown field 'recieved_at' \(did you mean 'received_at'\?\)"),
    ("blank id", [{"id": " ", "records": [QA]}], r"field 'id': is empty"),
]


@pytest.mark.parametrize("name,rows,pattern", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests(tmp_path: Path, name: str, rows: list[dict], pattern: str) -> None:
    with pytest.raises(DataError, match=pattern) as info:
        load_requests(jsonl(tmp_path / "req.jsonl", rows))
    assert "\n" not in str(info.value) and "req.jsonl" in str(info.value)


def test_record_over_context(tiny_tokenizer) -> None:
    # Within the characters 16 tokens can hold, so it is tokenised and counted.
    with pytest.raises(DataError, match=r"forget\.jsonl line 4: \d+ tokens, over the model's context of 16"):
        encode_pair(tiny_tokenizer, PromptFormat("plain"), "Where was X born?", "word " * 8, max_length=16, where="forget.jsonl line 4")
    # More characters than 16 tokens can hold: refused before tokenising, by the characters alone.
    with pytest.raises(DataError, match=r"forget\.jsonl line 4: \d+ characters, at least \d+ tokens, over the model's context of 16"):
        encode_pair(tiny_tokenizer, PromptFormat("plain"), "Where was X born?", "word " * 4000, max_length=16, where="forget.jsonl line 4")


def test_request_must_have_records() -> None:
    with pytest.raises(ValueError, match="empty request"):
        ForgetRequest(id="r", records=[])


# -- prompt formatting and label masking ------------------------------------------------------


@pytest.mark.parametrize("fmt", ["chat", "plain", "Q: {question}\nA:"])
def test_labels_cover_answer_and_eos_only(tiny_tokenizer, fmt: str) -> None:
    pf = PromptFormat.parse(fmt).resolve(tiny_tokenizer)
    enc = encode_pair(tiny_tokenizer, pf, "Where was Liora born?", "In Tarnholm.")
    labelled = [t for t in enc.labels if t != IGNORE]
    assert labelled[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(labelled[:-1]).strip() == "In Tarnholm."
    prompt_part = enc.input_ids[: enc.labels.index(labelled[0])]
    assert "Where was Liora born?" in tiny_tokenizer.decode(prompt_part)
    assert all(label == IGNORE for label in enc.labels[: len(prompt_part)])


def test_auto_format_picks_chat_template(tiny_tokenizer) -> None:
    assert PromptFormat().resolve(tiny_tokenizer).name == "chat"
    rendered = PromptFormat("chat").render("Hi?", tiny_tokenizer)
    assert rendered.endswith("<|im_start|>assistant\n") and "Hi?" in rendered
    assert PromptFormat("plain").render("Hi?", tiny_tokenizer) == "Question: Hi?\nAnswer:"


def test_bad_format_spec() -> None:
    with pytest.raises(DataError, match="template with '\\{question\\}'"):
        PromptFormat.parse("no slot here")
