"""Read records and forget requests from JSONL, JSON, CSV, Parquet or a saved HF `datasets` folder.

Every problem is raised as one `DataError` line naming the file, the record (line number or
id) and the field, for example::

    examples/bad.jsonl line 3 (id 'q7'): field 'answer': missing (a record with 'question' needs it)
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from unlearnkit.data.schema import RECORD_FIELDS, REQUEST_FIELDS, ForgetRequest, Record
from unlearnkit.errors import DataError, UnlearnkitError, did_you_mean, one_line, printable
from unlearnkit.files import atomic_file

# A row and where it came from ("line 3", "row 5", "item 2"), for error messages.
Row = tuple[str, dict[str, Any]]

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
_LIST_FIELDS = {"paraphrased_questions", "perturbed_answers", "choices", "paraphrased_question"}

# Bounds on input, checked while reading, before anything is parsed whole or tokenised.
DEFAULT_MAX_RECORD_BYTES = 8 * 2**20  # one JSONL line, CSV row or table row (a request with all its records)
MAX_JSON_FILE_RECORDS = 8  # a .json file is parsed whole: at most this many maximum records' worth
_ID_HINT = re.compile(rb'"id"\s*:\s*"((?:[^"\\]|\\.){1,200})"')


def max_record_bytes() -> int:
    """The largest record a reader accepts (`$UNLEARNKIT_MAX_RECORD_BYTES`, default 8 MiB)."""
    raw = os.environ.get("UNLEARNKIT_MAX_RECORD_BYTES")
    if raw is None:
        return DEFAULT_MAX_RECORD_BYTES
    if not raw.strip().isdigit() or int(raw) < 1:
        raise UnlearnkitError(f"UNLEARNKIT_MAX_RECORD_BYTES={raw!r}: use a positive number of bytes")
    return int(raw)


def show_id(value: Any) -> str:
    """An id as an error line shows it: quoted, control characters escaped, at most 80 characters."""
    return f"'{printable(value)}'"


def _too_long(path: Path, location: str, size: str | None, limit: int, head: bytes = b"") -> DataError:
    """The error for an over-long record, with its id where the first bytes show it."""
    match = _ID_HINT.search(head[:65536])
    hint = ""
    if match:
        try:
            found = json.loads(b'"' + match.group(1) + b'"')
            hint = f" (id {show_id(found)})"
        except ValueError:
            pass
    what = f"{size}, more than" if size else "longer than"
    return DataError(f"{path} {location}{hint}: {what} the maximum record size of {limit} bytes "
                     "(split it into smaller records, or raise UNLEARNKIT_MAX_RECORD_BYTES)")


def _bounded_lines(handle: IO[Any], path: Path, limit: int) -> Iterator[tuple[int, Any]]:
    """(line number, line) of an open file, refusing a line over `limit` after reading only
    `limit` + 1 units of it: memory and time stay bounded whatever the file holds."""
    number = 0
    newline = b"\n" if "b" in getattr(handle, "mode", "") else "\n"
    while True:
        try:
            line = handle.readline(limit + 1)
        except UnicodeDecodeError as exc:
            raise DataError(f"{path} line {number + 1}: not valid UTF-8 ({exc.reason})") from None
        if not line:
            return
        number += 1
        if len(line) > limit and not line.endswith(newline):
            head = line if isinstance(line, bytes) else line[:65536].encode("utf-8", "replace")
            raise _too_long(path, f"line {number}", None, limit, head)
        yield number, line


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _parse_json(text: str, path: Path, location: str | None = None) -> Any:
    """JSON text of `path` (one line of it at `location`, or all of it) as one value."""
    where = f"{path} {location}" if location else str(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} {location or f'line {exc.lineno}'}: invalid JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:  # a number of 5000 digits, nesting 100000 deep
        raise DataError(f"{where}: unreadable JSON ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if _SURROGATE_ESCAPE.search(text):  # `\ud800` alone decodes to a lone surrogate, which is not text
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(f"{where}: a \\u escape makes a lone surrogate, which is not text") from None
    return value


def _rows_jsonl(path: Path) -> Iterator[Row]:
    limit, seen = max_record_bytes(), False
    with path.open("rb") as handle:
        for number, raw in _bounded_lines(handle, path, limit):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte order mark
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path} line {number}: not valid UTF-8 (byte {exc.start} of the line)") from None
            if not line.strip():
                continue
            seen = True
            row = _parse_json(line, path, f"line {number}")
            if not isinstance(row, dict):
                raise DataError(f"{path} line {number}: expected a JSON object, got {_type(row)}")
            yield f"line {number}", row
    if not seen:
        raise DataError(f"{path}: the file is empty")


def _read_text(path: Path, max_bytes: int) -> str:
    size = path.stat().st_size
    if size > max_bytes:
        raise DataError(f"{path}: {size} bytes, more than the {max_bytes} a {path.suffix} file may hold (it is read whole); "
                        "write one record per line as .jsonl instead")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: not valid UTF-8 (byte {exc.start})") from None


def _rows_json(path: Path) -> Iterator[Row]:
    data = _parse_json(_read_text(path, MAX_JSON_FILE_RECORDS * max_record_bytes()), path)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON object or a list of objects, got {_type(data)}")
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{path} item {number}: expected a JSON object, got {_type(row)}")
        _check_size(path, f"item {number}", row)
        yield f"item {number}", row


def _text_size(value: Any) -> int:
    """Characters of text in a parsed row (what a record of it would hold)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(len(str(k)) + _text_size(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(_text_size(v) for v in value)
    return 8


def _check_size(path: Path, location: str, row: dict[str, Any]) -> None:
    """Rows of formats read in blocks (JSON, Parquet, datasets) obey the same record bound."""
    limit = max_record_bytes()
    size = _text_size(row)
    if size > limit:
        rid = row.get("id")
        head = json.dumps({"id": rid}).encode() if isinstance(rid, str) else b""
        raise _too_long(path, location, f"{size} characters of text", limit, head)


def _cell(column: str, value: Any) -> Any:
    """CSV and Parquet cells: list fields may hold JSON lists; empty cells are absent."""
    if value is None or (isinstance(value, float) and value != value) or value == "":
        return None
    if column in _LIST_FIELDS and isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    if hasattr(value, "tolist"):  # numpy arrays from parquet list columns
        return value.tolist()
    if column == "answer_index" and isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 20:
        return int(value)
    return value


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: _cell(k, v) for k, v in row.items() if k is not None}
    return {k: v for k, v in out.items() if v is not None}


def _rows_csv(path: Path) -> Iterator[Row]:
    limit = max_record_bytes()
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    previous = csv.field_size_limit(limit)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(line for _, line in _bounded_lines(handle, path, limit))
            try:
                if not reader.fieldnames:
                    raise DataError(f"{path}: no header row")
                for row in reader:
                    number = reader.line_num
                    if None in row:
                        raise DataError(f"{path} line {number}: more cells than header columns")
                    yield f"line {number}", _clean(row)
            except csv.Error as exc:
                raise DataError(f"{path} line {reader.line_num}: not readable as CSV ({exc})") from None
    finally:
        csv.field_size_limit(previous)


def _rows_batches(path: Path, batches: Iterator[Any]) -> Iterator[Row]:
    number = 0
    for batch in batches:
        for row in batch.to_pylist():
            number += 1
            _check_size(path, f"row {number}", row)
            yield f"row {number}", _clean(row)


def _rows_parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    try:
        table = pq.ParquetFile(path)
        batches = table.iter_batches(batch_size=256)
        first = next(batches, None)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if first is not None:
        yield from _rows_batches(path, _chain(first, batches, path))


def _chain(first: Any, rest: Iterator[Any], path: Path) -> Iterator[Any]:
    yield first
    try:
        yield from rest
    except Exception as exc:  # a damaged later row group
        raise DataError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def _rows_hf_dataset(path: Path) -> Iterator[Row]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise DataError(f"{path}: not a readable saved `datasets` folder ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if isinstance(ds, datasets.DatasetDict):
        if len(ds) != 1:
            raise DataError(f"{path}: holds splits {sorted(ds)}; point at one split's folder")
        ds = next(iter(ds.values()))
    yield from _rows_batches(path, iter(ds.data.to_batches(max_chunksize=256)))


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
        if not path.is_file():
            raise DataError(f"{path}: not a regular file")
        try:
            rows = list(reader(path))
        except PermissionError:
            raise DataError(f"{path}: no permission to read it") from None
    if not rows:
        raise DataError(f"{path}: holds no records")
    return rows


def _type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), type(value).__name__)


def _describe(error: ValidationError, fields: tuple[str, ...]) -> str:
    """The first validation problem as 'field 'x': problem'."""
    first = error.errors()[0]
    loc = [printable(p, 40) for p in first["loc"]]
    field = ".".join(loc)
    if first["type"] == "extra_forbidden":
        return f"unknown field '{field}'{did_you_mean(loc[-1], fields)}"
    if first["type"] == "missing":
        return f"field '{field}': missing"
    message = one_line(first["msg"].removeprefix("Value error, "))
    if not loc:
        return message
    got = first.get("input")
    if first["type"].endswith("_type") and got is not None:
        message = f"{message}, got {_type(got)}"
    return f"field '{field}': {message}"


def _where(path: Path, location: str, row: dict[str, Any]) -> str:
    rid = row.get("id")
    return f"{path} {location}" + (f" (id {show_id(rid)})" if isinstance(rid, str | int) and not isinstance(rid, bool) else "")


def parse_record(row: dict[str, Any], where: str) -> Record:
    try:
        return Record.model_validate(row).located(where)
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
                    f"{path} {location}: duplicate record id {show_id(record.id)} "
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
            raise DataError(f"{path}: duplicate request id {show_id(request.id)}")
        seen.add(request.id)
    return requests


def write_jsonl(path: str | Path, items: list[Record] | list[ForgetRequest]) -> None:
    """Write records or requests as JSONL, atomically (temporary name, then rename)."""
    with atomic_file(path) as handle:
        for item in items:
            handle.write(item.model_dump_json(exclude_defaults=True) + "\n")
