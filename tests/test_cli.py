"""The command line: tables on success, one error line and a non-zero exit on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "unlearnkit", *args], capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "COLUMNS": "200"})


def test_help_lists_core_commands() -> None:
    out = cli("--help")
    assert out.returncode == 0
    for command in ("models", "score", "generate"):
        assert command in out.stdout


def test_score_on_tiny_model_writes_json(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = cli("score", "--model", str(tiny_model_dir), "--data", str(EXAMPLES / "requests.jsonl"), "--json", str(tmp_path / "s.json"))
    assert out.returncode == 0, out.stderr
    items = json.loads((tmp_path / "s.json").read_text())["items"]
    assert [i["id"] for i in items] == ["lm-birth", "lm-job", "lm-phone", "salt-1", "salt-2"]
    assert all(0 < i["prob"] < 1 and i["tokens"] > 0 for i in items)
    assert "lm-birth" in out.stdout


def test_generate_on_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = cli("generate", "--model", str(tiny_model_dir), "--data", str(EXAMPLES / "retain.jsonl"), "--n", "2", "--temperature", "1.0", "--max-new-tokens", "4", "--json", str(tmp_path / "g.json"))
    assert out.returncode == 0, out.stderr
    items = json.loads((tmp_path / "g.json").read_text())["items"]
    assert len(items) == 4 and all(len(i["outputs"]) == 2 for i in items)


@pytest.mark.parametrize(
    "args,message",
    [
        (("score", "--model", "/no/such/dir", "--data", str(EXAMPLES / "retain.jsonl")), "error: model '/no/such/dir': no such file or folder, and not a hub id"),
        (("score", "--data", "/no/such.jsonl"), "error: /no/such.jsonl: no such file or folder"),
        (("prepare", "--world", "/no/world", "--finetune-share", "0"), "error: --finetune-share 0.0: use a value in (0, 1]"),
    ],
)
def test_errors_are_one_line(args: tuple[str, ...], message: str) -> None:
    out = cli(*args)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [message]


def test_malformed_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Q?"}\n')
    out = cli("score", "--data", str(bad))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == f"error: {bad} line 1: field 'answer': missing (a record with 'question' needs it)"
