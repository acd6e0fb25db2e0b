"""Read records and forget requests from JSONL, JSON, CSV, Parquet or a saved HF `datasets` folder.

Every problem is raised as one `DataError` line naming the file, the record (line number or
id) and the field, for example::

    examples/bad.jsonl line 3 (id 'q7'): field 'answer': missing (a record with 'question' needs it)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from unlearnkit.data.schema import RECORD_FIELDS, REQUEST_FIELDS, ForgetRequest, Record
from unlearnkit.errors import DataError, did_you_mean
from unlearnkit.files import atomic_file

# A row and where it came from ("line 3", "row 5", "item 2"), for error messages.
Row = tuple[str, dict[str, Any]]

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
_LIST_FIELDS = {"paraphrased_questions", "perturbed_answers", "choices", "paraphrased_question"}


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: not valid UTF-8 (byte {exc.start})") from None


def _rows_jsonl(path: Path) -> Iterator[Row]:
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {number}: expected a JSON object, got {_type(row)}")
        yield f"line {number}", row


def _rows_json(path: Path) -> Iterator[Row]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {exc.lineno}: invalid JSON ({exc.msg})") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON object or a list of objects, got {_type(data)}")
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{path} item {number}: expected a JSON object, got {_type(row)}")
        yield f"item {number}", row


def _cell(column: str, value: Any) -> Any:
    """CSV and Parquet cells: list fields may hold JSON lists; empty cells are absent."""
    if value is None or (isinstance(value, float) and value != value) or value == "":
        return None
    if column in _LIST_FIELDS and isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if hasattr(value, "tolist"):  # numpy arrays from parquet list columns
        return value.tolist()
    if column == "answer_index" and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: _cell(k, v) for k, v in row.items() if k is not None}
    return {k: v for k, v in out.items() if v is not None}


def _rows_csv(path: Path) -> Iterator[Row]:
    reader = csv.DictReader(_read_text(path).splitlines())
    if not reader.fieldnames:
        raise DataError(f"{path}: no header row")
    for number, row in enumerate(reader, start=2):
        if None in row:
            raise DataError(f"{path} line {number}: more cells than header columns")
        yield f"line {number}", _clean(row)


def _rows_table(path: Path, table: Any) -> Iterator[Row]:
    for number, row in enumerate(table.to_pylist(), start=1):
        yield f"row {number}", _clean(row)


def _rows_parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    yield from _rows_table(path, table)


def _rows_hf_dataset(path: Path) -> Iterator[Row]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise DataError(f"{path}: not a readable saved `datasets` folder ({exc})") from None
    if isinstance(ds, datasets.DatasetDict):
        if len(ds) != 1:
            raise DataError(f"{path}: holds splits {sorted(ds)}; point at one split's folder")
        ds = next(iter(ds.values()))
    yield from _rows_table(path, ds.data)


def is_hf_dataset_dir(path: Path) -> bool:
    return path.is_dir() and (
        (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
    )


def read_rows(path: str | Path) -> list[Row]:
    """All rows of a data file, each with its location for error messages."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if is_hf_dataset_dir(path):
        rows = list(_rows_hf_dataset(path))
    elif path.is_dir():
        raise DataError(f"{path}: a folder, but not a saved `datasets` folder")
    else:
        readers = {
            ".jsonl": _rows_jsonl,
            ".json": _rows_json,
            ".csv": _rows_csv,
            ".parquet": _rows_parquet,
        }
        reader = readers.get(path.suffix.lower())
        if reader is None:
            raise DataError(
                f"{path}: unknown file type '{path.suffix}' (use one of {', '.join(SUFFIXES)} "
                "or a saved `datasets` folder)"
            )
        rows = list(reader(path))
    if not rows:
        raise DataError(f"{path}: holds no records")
    return rows


def _type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), type(value).__name__)


def _describe(error: ValidationError, fields: tuple[str, ...]) -> str:
    """The first validation problem as 'field 'x': problem'."""
    first = error.errors()[0]
    loc = [str(p) for p in first["loc"]]
    field = ".".join(loc)
    if first["type"] == "extra_forbidden":
        return f"unknown field '{field}'{did_you_mean(loc[-1], fields)}"
    if first["type"] == "missing":
        return f"field '{field}': missing"
    message = first["msg"].removeprefix("Value error, ")
    if not loc:
        return message
    got = first.get("input")
    if first["type"].endswith("_type") and got is not None:
        message = f"{message}, got {_type(got)}"
    return f"field '{field}': {message}"


def _where(path: Path, location: str, row: dict[str, Any]) -> str:
    rid = row.get("id")
    return f"{path} {location}" + (f" (id '{rid}')" if isinstance(rid, str | int) else "")


def parse_record(row: dict[str, Any], where: str) -> Record:
    try:
        return Record.model_validate(row)
    except ValidationError as exc:
        raise DataError(f"{where}: {_describe(exc, RECORD_FIELDS)}") from None


def load_records(path: str | Path) -> list[Record]:
    """Records from one file or saved dataset folder, validated, with unique ids."""
    path = Path(path)
    records: list[Record] = []
    seen: dict[str, str] = {}
    for location, row in read_rows(path):
        if "records" in row:
            raise DataError(
                f"{path} {location}: this is a forget request, not a record (load it as a request)"
            )
        record = parse_record(row, _where(path, location, row))
        if record.id is not None:
            if record.id in seen:
                raise DataError(
                    f"{path} {location}: duplicate record id '{record.id}' "
                    f"(first at {seen[record.id]})"
                )
            seen[record.id] = location
        records.append(record)
    return records


def parse_request(row: dict[str, Any], where: str) -> ForgetRequest:
    """One forget request object (`id`, `records`, ...), validated; errors name `where`."""
    records = row.get("records")
    if not isinstance(records, list):
        raise DataError(f"{where}: field 'records': expected a list of records, got {_type(records)}")
    parsed = dict(row)
    for key in ("records", "probes"):
        items = row.get(key, [])
        if not isinstance(items, list):
            raise DataError(f"{where}: field '{key}': expected a list of records, got {_type(items)}")
        parsed[key] = [
            parse_record(item, f"{where} {key}[{i}]") if isinstance(item, dict) else _bad_item(where, key, i, item)
            for i, item in enumerate(items)
        ]
    try:
        return ForgetRequest.model_validate(parsed)
    except ValidationError as exc:
        raise DataError(f"{where}: {_describe(exc, REQUEST_FIELDS)}") from None


def _bad_item(where: str, key: str, index: int, item: Any) -> Record:
    raise DataError(f"{where} {key}[{index}]: expected a record object, got {_type(item)}")


def load_requests(path: str | Path, kind: str = "free") -> list[ForgetRequest]:
    """Forget requests from a file or folder.

    Accepted shapes: a file of request objects (each with `id` and `records`); a plain records
    file, which becomes one request named after the file; or a folder of such files, read in
    name order. Request ids must be unique across everything loaded.
    """
    path = Path(path)
    if path.is_dir() and not is_hf_dataset_dir(path):
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
        if not files:
            raise DataError(f"{path}: a folder with no {', '.join(SUFFIXES)} files")
        requests = [r for f in files for r in load_requests(f, kind)]
    else:
        rows = read_rows(path)
        if any("records" in row for _, row in rows):
            requests = []
            for location, row in rows:
                where = _where(path, location, row)
                if "records" not in row:
                    raise DataError(f"{where}: field 'records': missing (other rows are requests)")
                requests.append(parse_request(row, where))
        else:
            records = load_records(path)
            requests = [ForgetRequest(id=path.stem, kind=kind, records=records)]
    seen: set[str] = set()
    for request in requests:
        if request.id in seen:
            raise DataError(f"{path}: duplicate request id '{request.id}'")
        seen.add(request.id)
    return requests


def write_jsonl(path: str | Path, items: list[Record] | list[ForgetRequest]) -> None:
    """Write records or requests as JSONL, atomically (temporary name, then rename)."""
    with atomic_file(path) as handle:
        for item in items:
            handle.write(item.model_dump_json(exclude_defaults=True) + "\n")
