"""Benchmark adapters on small copies of the hub files (tests/fixtures/benchmarks, written by
tests/benchmark_fixtures.py with the official layouts and column names): what each column
becomes, the requests and sets, the clear errors, and the commands that read them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from unlearnkit.data.benchmarks import benchmark_names, load_benchmark
from unlearnkit.errors import DataError, UnlearnkitError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "benchmarks"
TOFU, MUSE, WMDP = FIXTURES / "tofu", FIXTURES / "muse-news", FIXTURES / "wmdp"


def test_the_committed_fixtures_are_the_builders_output(tmp_path: Path) -> None:
    from benchmark_fixtures import write_all

    write_all(tmp_path)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(FIXTURES) for p in FIXTURES.rglob("*") if p.is_file())
    assert written == committed
    for path in written:
        if path.suffix == ".json":
            assert (tmp_path / path).read_text() == (FIXTURES / path).read_text(), path


def test_names_cover_the_three_families() -> None:
    names = benchmark_names()
    assert {"tofu:forget01", "tofu:forget05", "tofu:forget10", "muse:news", "muse:books", "wmdp:bio", "wmdp:cyber", "wmdp:chem"} == set(names)
    with pytest.raises(DataError, match=r"unknown benchmark 'tofu:forget1' \(did you mean 'tofu:forget10'\?\)"):
        load_benchmark("tofu:forget1", TOFU)


def test_tofu_columns_become_records() -> None:
    bench = load_benchmark("tofu:forget10", TOFU)
    assert bench.suite == "tofu" and [r.id for r in bench.requests] == ["tofu-forget10"]
    first = bench.requests[0].records[0]
    row = json.loads((TOFU / "forget10_perturbed.json").read_text().splitlines()[0])
    assert first.id == "0" and first.meta == {"source": "forget10_perturbed"}
    assert (first.question, first.answer, first.paraphrased_answer) == (row["question"], row["answer"], row["paraphrased_answer"])
    assert first.paraphrased_questions == [row["paraphrased_question"]]
    assert first.perturbed_answers == row["perturbed_answer"] and len(first.perturbed_answers) == 5
    assert {role: len(records) for role, records in bench.sets.items()} == {"retain": 2, "holdout": 2, "real_authors": 2, "real_facts": 2}
    assert bench.sets["real_facts"][0].answer == "Paris" and len(bench.sets["real_facts"][0].perturbed_answers) == 3
    assert bench.train_retain == []  # evaluation does not read retain90
    trained = load_benchmark("tofu:forget10", TOFU, training=True)
    assert [r.meta["source"] for r in trained.train_retain] == ["retain90", "retain90"]


def test_muse_measures_its_splits_and_unlearns_its_raw_corpus() -> None:
    bench = load_benchmark("muse:news", MUSE)
    request = bench.requests[0]
    sources = [r.meta["source"] for r in request.records]
    assert sources == ["verbmem/forget"] * 2 + ["knowmem/forget_qa"] * 2 + ["privleak/forget"] * 2
    verbatim = request.records[0]
    assert verbatim.prompt.startswith("The harbour council") and verbatim.continuation.startswith(" the lighthouse")
    assert [r.meta["source"] for r in bench.sets["holdout"]] == ["privleak/holdout"] * 2
    assert [r.meta["source"] for r in bench.shots["forget"]] == ["knowmem/forget_qa_icl"]
    assert [r.meta["source"] for r in bench.shots["retain"]] == ["knowmem/retain_qa_icl"]
    trained = load_benchmark("muse:news", MUSE, training=True)
    assert [r.meta["source"] for r in trained.requests[0].records] == ["raw/forget"] * 2
    assert trained.measured["muse-news"] == request.records
    assert [r.meta["source"] for r in trained.train_retain] == ["raw/retain1"] * 2
    stream = load_benchmark("muse:news", MUSE, stream="sust")
    assert [r.id for r in stream.requests] == [f"muse-news-sust-{k}" for k in range(1, 5)]
    assert all(stream.measured[r.id] == request.records for r in stream.requests)
    with pytest.raises(DataError, match="muse:books: MUSE publishes the sust folds for news only"):
        load_benchmark("muse:books", MUSE, stream="sust")


def test_wmdp_questions_and_corpora() -> None:
    bench = load_benchmark("wmdp:cyber", WMDP)
    questions = bench.requests[0].records
    assert [q.kind for q in questions] == ["mc", "mc"] and questions[0].answer_index == 1 and len(questions[0].choices) == 4
    trained = load_benchmark("wmdp:cyber", WMDP, training=True)
    assert [r.kind for r in trained.requests[0].records] == ["passage", "passage"]
    assert trained.measured["wmdp-cyber"] == questions and len(trained.train_retain) == 1
    with pytest.raises(DataError, match=r"^wmdp:bio: the bio forget corpus is gated: request it through the form"):
        load_benchmark("wmdp:bio", WMDP, training=True)
    with pytest.raises(DataError, match="^wmdp:chem: WMDP publishes no chemistry corpus"):
        load_benchmark("wmdp:chem", WMDP, training=True)
    assert len(load_benchmark("wmdp:bio", WMDP).requests[0].records) == 2  # its questions are public


def test_offline_without_a_local_copy_is_one_line_saying_what_to_download(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Couldn't reach 'locuslab/TOFU' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    monkeypatch.setattr("unlearnkit.data.benchmarks.hub_reachable", lambda: True)  # the probe passed; the download fails
    with pytest.raises(DataError) as caught:
        load_benchmark("tofu:forget10")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("tofu:forget10: cannot read locuslab/TOFU (forget10_perturbed) from the hub (ConnectionError)")
    assert "huggingface-cli download locuslab/TOFU --repo-type dataset --local-dir DIR" in message and "--data-dir DIR" in message


def test_a_local_copy_without_the_file_names_it(tmp_path: Path) -> None:
    shutil.copytree(TOFU, tmp_path / "tofu")
    (tmp_path / "tofu" / "holdout10.json").unlink()
    with pytest.raises(DataError, match=r"tofu:forget10: .*tofu has no holdout10.json or holdout10.jsonl \(locuslab/TOFU, holdout10\); download it with: huggingface-cli download locuslab/TOFU"):
        load_benchmark("tofu:forget10", tmp_path / "tofu")


def test_a_bad_row_names_the_split_row_and_column(tmp_path: Path) -> None:
    shutil.copytree(TOFU, tmp_path / "tofu")
    path = tmp_path / "tofu" / "retain_perturbed.json"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    del rows[1]["answer"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"^tofu:forget10: .*/retain_perturbed.json row 1: field 'answer': missing"):
        load_benchmark("tofu:forget10", tmp_path / "tofu")
    rows[1]["answer"] = rows[1]["perturbed_answer"][0]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"retain_perturbed.json row 1: field 'perturbed_answers': contains the true answer"):
        load_benchmark("tofu:forget10", tmp_path / "tofu")


@pytest.fixture(scope="module")
def cli() -> Any:
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    return app, CliRunner()


def test_benchmarks_command_lists_the_three_families(cli: Any) -> None:
    app, runner = cli
    result = runner.invoke(app, ["benchmarks"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ("tofu:forget10", "muse:news", "wmdp:cyber", "locuslab/TOFU", "muse-bench/MUSE-News", "cais/wmdp"):
        assert name in result.output


@pytest.mark.parametrize(
    ("name", "folder", "rows"),
    [
        ("tofu:forget10", TOFU, [("tofu-forget10", "truth_ratio"), ("real_authors", "rouge"), ("utility", "model_utility")]),
        ("muse:news", MUSE, [("muse-news", "verbmem"), ("muse-news", "knowmem"), ("retain", "knowmem")]),
        ("wmdp:cyber", WMDP, [("wmdp-cyber", "mc_accuracy")]),
    ],
)
def test_eval_reads_a_benchmark_from_a_local_copy(cli: Any, tiny_model_dir: Path, tmp_path: Path, name: str, folder: Path, rows: list[tuple[str, str]]) -> None:
    app, runner = cli
    out = tmp_path / "result.json"
    args = ["eval", "--model", str(tiny_model_dir), "--benchmark", name, "--data-dir", str(folder), "--max-new-tokens", "4", "--json", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["suite"] == name.split(":")[0] and saved["settings"]["benchmark"] == name
    for scope, metric in rows:
        assert saved["aggregates"][scope][metric] is not None, (scope, metric)


def test_eval_without_data_or_benchmark_is_one_error(cli: Any) -> None:
    app, runner = cli
    result = runner.invoke(app, ["eval", "--model", "x"])
    assert isinstance(result.exception, UnlearnkitError) and "--data or --benchmark" in str(result.exception)
    result = runner.invoke(app, ["eval", "--model", "x", "--data-dir", str(TOFU)])
    assert isinstance(result.exception, UnlearnkitError) and "name the benchmark" in str(result.exception)


def test_unlearn_takes_the_benchmark_request_and_the_retain_set_it_keeps() -> None:
    from unlearnkit.commands.unlearn import forget_and_retain

    request, kept, source = forget_and_retain(None, None, "tofu:forget10", TOFU, None)
    assert request.id == "tofu-forget10" and len(request.records) == 2
    assert [r.meta["source"] for r in kept] == ["retain90", "retain90"] and source == "benchmark tofu:forget10"
    with pytest.raises(UnlearnkitError, match="exactly one of --forget FILE or --benchmark NAME"):
        forget_and_retain(Path("f.jsonl"), None, "tofu:forget10", TOFU, None)


def test_a_plan_names_a_benchmark_and_a_stream(tmp_path: Path) -> None:
    from unlearnkit.engine.runner import load_requests_and_data
    from unlearnkit.plan import PlanError, load_plan

    shutil.copytree(MUSE, tmp_path / "muse")
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text("model: default\nmethod: ga\nbenchmark: {name: 'muse:news', data_dir: muse, stream: sust}\noutput: run\n")
    plan = load_plan(plan_file)
    assert plan.benchmark is not None and plan.benchmark.data_dir == tmp_path / "muse"
    requests, data, _, kept = load_requests_and_data(plan)
    assert [r.id for r in requests] == [f"muse-news-sust-{k}" for k in range(1, 5)]
    assert data.requests == [] and set(data.measured) == {r.id for r in requests}
    assert data.shots["forget"][0].meta["source"] == "knowmem/forget_qa_icl" and len(kept) == 2
    plan_file.write_text("model: default\nmethod: ga\nbenchmark: {name: 'tofu:forget10', stream: sust}\noutput: run\n")
    with pytest.raises(PlanError, match=r"benchmark.stream: unknown stream 'sust' for tofu:forget10; streams: none"):
        load_plan(plan_file)
    plan_file.write_text("model: default\nmethod: ga\noutput: run\n")
    with pytest.raises(PlanError, match="plan.yaml: requests: nothing to unlearn: name request files or worlds, or a benchmark"):
        load_plan(plan_file)
