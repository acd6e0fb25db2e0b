"""The reference frameworks' files: TOFU's published per-item logs aggregated by unlearnkit give
the reference's forget quality and model utility; results written in open-unlearning's layout;
a retain model's logs as the oracle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from unlearnkit.eval.interop import reference_oracle, tofu_legacy_ratios, tofu_legacy_scores, write_ou_logs

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXCERPT = json.loads((FIXTURES / "tofu_logs" / "excerpt.json").read_text())

# What TOFU's own aggregation (locuslab/tofu `aggregate_eval_stat.py`, get_model_utility and
# get_forget_quality, run unchanged at commit bdc209e) gives on the excerpt's items.
REFERENCE_FINETUNED = {
    "retain:probability": 0.9874238698088148,
    "retain:rouge": 0.9851190476190476,
    "retain:truth_ratio": 0.383690118452841,
    "real_authors:probability_options": 0.42152812326751726,
    "real_authors:rouge": 1.0,
    "real_authors:truth_ratio": 0.689960557855163,
    "real_facts:probability_options": 0.2186997127549072,
    "real_facts:rouge": 0.8333333333333334,
    "real_facts:truth_ratio": 0.2983260828009873,
    "model_utility": 0.484383800494446,
    "forget_quality": 0.007859014050964517,
}
REFERENCE_RETAIN = {"model_utility": 0.501748574577009, "forget_quality": 1.0}


def test_tofu_published_logs_give_the_reference_forget_quality_and_model_utility() -> None:
    ours = tofu_legacy_scores(EXCERPT["finetuned"], EXCERPT["retain90"])
    assert ours.keys() == REFERENCE_FINETUNED.keys()
    for key, value in REFERENCE_FINETUNED.items():
        assert ours[key] == pytest.approx(value, abs=1e-9, rel=0), key
    retain = tofu_legacy_scores(EXCERPT["retain90"], EXCERPT["retain90"])
    for key, value in REFERENCE_RETAIN.items():
        assert retain[key] == pytest.approx(value, abs=1e-9, rel=0), key


def test_tofu_logs_of_a_retain_model_are_an_oracle(tmp_path: Path) -> None:
    path = tmp_path / "eval_log_aggregated.json"
    path.write_text(json.dumps(EXCERPT["retain90"]))
    oracle = reference_oracle(path, ["truth_ratio", "mia_min_k"], ["tofu-forget10"], "tofu")
    found = oracle.result("tofu-forget10", "truth_ratio")
    assert found is not None and found.per_item == tofu_legacy_ratios(EXCERPT["retain90"]["eval_log_forget.json"])
    assert oracle.result("tofu-forget10", "mia_min_k") is None  # TOFU's logs have no MIA
    with pytest.raises(Exception, match="none of mia_min_k"):
        reference_oracle(path, ["mia_min_k"], ["r"], "tofu")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(Exception, match=r"bad.json line 1: invalid JSON"):
        reference_oracle(tmp_path / "bad.json", ["truth_ratio"], ["r"], "tofu")


@pytest.fixture(scope="module")
def tofu_data() -> Any:
    from unlearnkit.data.benchmarks import load_benchmark
    from unlearnkit.eval.data import EvalData

    return EvalData.from_benchmark(load_benchmark("tofu:forget10", FIXTURES / "benchmarks" / "tofu"))


def test_results_in_open_unlearnings_layout_and_back_as_the_oracle(tiny_subject: Any, tofu_data: Any, tmp_path: Path) -> None:
    from unlearnkit.eval.suites import evaluate, get_suite, with_max_new_tokens
    from unlearnkit.models.tiny import tiny_model

    suite = with_max_new_tokens(get_suite("tofu"), 4)
    oracle = tiny_subject.with_model(tiny_model(tiny_subject.tokenizer, seed=1), name="retain")
    on_oracle = evaluate(suite, oracle, tofu_data)
    logs_path, summary_path = write_ou_logs(on_oracle, tmp_path / "retain")
    assert (logs_path.name, summary_path.name) == ("TOFU_EVAL.json", "TOFU_SUMMARY.json")
    logs = json.loads(logs_path.read_text())
    for key in ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio", "extraction_strength", "mia_min_k",
                "retain_Q_A_Prob", "retain_Truth_Ratio", "ra_Q_A_Prob_normalised", "ra_Truth_Ratio", "wf_Q_A_ROUGE", "model_utility"):
        assert key in logs, key
    assert set(logs["forget_truth_ratio"]["value_by_index"]) == {"0", "1"}  # TOFU's row indices
    assert logs["forget_truth_ratio"]["value_by_index"]["0"]["score"] == pytest.approx(on_oracle.result("tofu-forget10", "truth_ratio").per_item["0"])
    assert set(logs["forget_Q_A_Prob"]["value_by_index"]["0"]) == {"prob", "avg_loss"}
    assert set(logs["forget_Q_A_ROUGE"]["value_by_index"]["1"]) == {"rougeL_recall", "generation"}
    summary = json.loads(summary_path.read_text())
    assert summary["model_utility"] == pytest.approx(on_oracle.value("utility", "model_utility"))
    # The retain model's file as the oracle gives what the retain model itself gives.
    wanted = [e.oracle for e in suite.entries if e.oracle]
    from_logs = evaluate(suite, tiny_subject, tofu_data, oracle=reference_oracle(logs_path, wanted, ["tofu-forget10"], "tofu"))
    from_model = evaluate(suite, tiny_subject, tofu_data, oracle=oracle)
    for metric in ("forget_quality", "privleak"):
        assert from_logs.value("tofu-forget10", metric) == pytest.approx(from_model.value("tofu-forget10", metric)), metric


def test_eval_writes_both_layouts_and_reads_reference_logs(tiny_model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    reference = tmp_path / "eval_log_aggregated.json"
    reference.write_text(json.dumps(EXCERPT["retain90"]))
    args = ["eval", "--model", str(tiny_model_dir), "--benchmark", "tofu:forget10", "--data-dir", str(FIXTURES / "benchmarks" / "tofu"),
            "--max-new-tokens", "4", "--json", str(tmp_path / "ours.json"), "--ou-dir", str(tmp_path / "ou")]
    # TOFU's logs hold 12 forget items and the fixture 2: the KS test still runs.
    result = CliRunner().invoke(app, [*args, "--reference-logs", str(reference)])
    assert result.exit_code == 0, result.output
    ours = json.loads((tmp_path / "ours.json").read_text())
    assert ours["aggregates"]["tofu-forget10"]["forget_quality"] is not None
    assert "privleak" not in ours["aggregates"]["tofu-forget10"]  # no MIA in TOFU's logs: no PrivLeak
    ou = json.loads((tmp_path / "ou" / "TOFU_SUMMARY.json").read_text())
    assert ou["forget_quality"] == pytest.approx(ours["aggregates"]["tofu-forget10"]["forget_quality"])
