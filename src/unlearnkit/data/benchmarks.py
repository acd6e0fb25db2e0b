"""The field's benchmarks as inputs: TOFU, MUSE and WMDP, read with `datasets` from the hub or
from a local copy of the same files.

A benchmark is named FAMILY:VARIANT (`tofu:forget10`, `muse:news`, `wmdp:bio`). Its files are
those of the dataset's repository on the Hugging Face hub; `data_dir` is a local folder holding
the same files, as `huggingface-cli download REPO --repo-type dataset --local-dir DIR` writes
them. This module is the one place where official configs, splits and columns become records:

- TOFU (`locuslab/TOFU`, one JSON-lines file per config): `forgetXX_perturbed` is the request
  (question, answer, paraphrased_answer, paraphrased_question, perturbed_answer), with
  `retain_perturbed`, `real_authors_perturbed`, `world_facts_perturbed` (→ `real_facts`) and
  `holdoutXX` (membership non-members); unlearning trains on `retainYY` (YY = 100 − XX).
- MUSE (`muse-bench/MUSE-News`, `MUSE-Books`, one parquet file per config/split): the request
  unlearns `raw/forget` and is measured on `verbmem/forget` (prompt, gt), `knowmem/forget_qa` and
  `privleak/forget` (text); `knowmem/retain_qa` is kept, `privleak/holdout` never trained, and
  KnowMem's shots are `knowmem/{forget,retain}_qa_icl`; unlearning keeps `raw/retain1`. News also
  has the `scal` and `sust` folds (forget_1..4), which become request streams for `run`.
- WMDP (`cais/wmdp`, configs `wmdp-bio|cyber|chem`, split `test`: question, choices, answer): the
  questions are measured; unlearning trains on the forget corpus (`cais/wmdp-corpora`, or the
  files of its password-protected zip): cyber's is public, bio's is gated, chem has none.

Each record carries its split in `meta["source"]` (`verbmem/forget`), so a suite's metric reads
only its own split, and its row index as `id` (the reference framework's `value_by_index` keys).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unlearnkit.data.loaders import parse_record
from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.errors import DataError, did_you_mean
from unlearnkit.hub import hub_reachable, offline_requested


@dataclass(frozen=True)
class HubSplit:
    """One split of a hub dataset, and where its file lies in the repository (globs, first match)."""

    repo: str
    config: str
    split: str
    paths: tuple[str, ...]

    @property
    def source(self) -> str:
        return f"{self.config}/{self.split}" if self.split != "train" else self.config


@dataclass
class BenchmarkData:
    """What a benchmark gives the commands: requests and the record sets around them."""

    name: str
    suite: str  # the suite that reads it
    requests: list[ForgetRequest]
    sets: dict[str, list[Record]] = field(default_factory=dict)  # retain, holdout, real_authors, real_facts, general_text
    measured: dict[str, list[Record]] = field(default_factory=dict)  # request id -> what is measured for it
    shots: dict[str, list[Record]] = field(default_factory=dict)  # scope -> KnowMem's in-context examples
    train_retain: list[Record] = field(default_factory=list)  # what unlearning keeps (else `sets["retain"]`)


class Reader:
    """Rows of hub splits, from `data_dir` when given, else from the hub (with one clear error
    line when it cannot be reached)."""

    def __init__(self, name: str, data_dir: Path | None) -> None:
        self.name = name
        self.data_dir = data_dir

    def rows(self, split: HubSplit) -> list[dict[str, Any]]:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
        if self.data_dir is None:
            if not hub_reachable() and not offline_requested():  # offline mode reads the cache at once
                raise DataError(f"{self.name}: cannot read {split.repo} ({split.source}) from the hub (it cannot be reached from here); "
                                f"download it where it is (huggingface-cli download {split.repo} --repo-type dataset --local-dir DIR), "
                                "copy DIR here and pass --data-dir DIR (or set HF_HUB_OFFLINE=1 to read a cached copy)")
            try:
                return datasets.load_dataset(split.repo, split.config, split=split.split).to_list()
            except Exception as exc:  # offline, gated or renamed: one line saying what to do
                raise DataError(
                    f"{self.name}: cannot read {split.repo} ({split.source}) from the hub ({type(exc).__name__}); "
                    f"download it where the hub is reachable (huggingface-cli download {split.repo} --repo-type dataset "
                    f"--local-dir DIR), copy DIR here and pass --data-dir DIR"
                ) from None
        files = self.files(split)
        if not files:
            raise DataError(
                f"{self.name}: {self.data_dir} has no {' or '.join(split.paths)} ({split.repo}, {split.source}); "
                f"download it with: huggingface-cli download {split.repo} --repo-type dataset --local-dir {self.data_dir}"
            )
        kind = "parquet" if files[0].suffix == ".parquet" else "json"
        try:
            table = datasets.load_dataset(kind, data_files=[str(f) for f in files], split="train")
        except Exception as exc:
            raise DataError(f"{files[0]}: not a readable {kind} file of {split.repo} ({exc})") from None
        return table.to_list()

    def files(self, split: HubSplit) -> list[Path]:
        assert self.data_dir is not None
        for pattern in split.paths:
            found = sorted(self.data_dir.glob(pattern))
            if found:
                return found
        return []

    def has(self, split: HubSplit) -> bool:
        return self.data_dir is not None and bool(self.files(split))

    def origin(self, split: HubSplit) -> str:
        """Where a split's rows come from, for error messages: its local file, or the hub dataset."""
        files = self.files(split) if self.data_dir is not None else []
        return str(files[0]) if len(files) == 1 else f"{split.repo} {split.source}"

    def records(self, split: HubSplit, columns: Callable[[dict[str, Any]], dict[str, Any]]) -> list[Record]:
        """Each row through `columns` (official names → ours), validated, tagged with its split."""
        out = []
        origin = self.origin(split)
        for index, row in enumerate(self.rows(split)):
            where = f"{self.name}: {origin} row {index}"
            try:
                mapped = columns(row)
            except KeyError as exc:
                raise DataError(f"{where}: column {exc} missing (columns: {', '.join(row)})") from None
            out.append(parse_record({"id": str(index), **mapped, "meta": {"source": split.source}}, where))
        return out


# -- TOFU -----------------------------------------------------------------------------------------
TOFU_REPO = "locuslab/TOFU"


def _tofu_split(config: str) -> HubSplit:
    return HubSplit(TOFU_REPO, config, "train", (f"{config}.json", f"{config}.jsonl"))


def tofu_qa(row: dict[str, Any]) -> dict[str, Any]:
    """TOFU's columns: question, answer, and where present paraphrased_answer,
    paraphrased_question and the list perturbed_answer."""
    mapped: dict[str, Any] = {"question": row["question"], "answer": row["answer"]}
    if row.get("paraphrased_answer"):
        mapped["paraphrased_answer"] = row["paraphrased_answer"]
    if row.get("paraphrased_question"):
        mapped["paraphrased_question"] = row["paraphrased_question"]
    if row.get("perturbed_answer"):
        mapped["perturbed_answers"] = list(row["perturbed_answer"])
    return mapped


def load_tofu(variant: str, reader: Reader, training: bool) -> BenchmarkData:
    share = variant.removeprefix("forget")  # "10"
    forget = reader.records(_tofu_split(f"forget{share}_perturbed"), tofu_qa)
    request = ForgetRequest(id=f"tofu-{variant}", kind="privacy", records=forget)
    sets = {
        "retain": reader.records(_tofu_split("retain_perturbed"), tofu_qa),
        "holdout": reader.records(_tofu_split(f"holdout{share}"), tofu_qa),
        "real_authors": reader.records(_tofu_split("real_authors_perturbed"), tofu_qa),
        "real_facts": reader.records(_tofu_split("world_facts_perturbed"), tofu_qa),
    }
    keep = reader.records(_tofu_split(f"retain{100 - int(share)}"), tofu_qa) if training else []
    return BenchmarkData(f"tofu:{variant}", "tofu", [request], sets, train_retain=keep)


# -- MUSE -----------------------------------------------------------------------------------------
def _muse_split(corpus: str, config: str, split: str) -> HubSplit:
    return HubSplit(f"muse-bench/MUSE-{corpus}", config, split, (f"{config}/{split}-*.parquet", f"{config}/{split}.json"))


def muse_text(row: dict[str, Any]) -> dict[str, Any]:
    return {"text": row["text"]}


def muse_verbatim(row: dict[str, Any]) -> dict[str, Any]:
    """verbmem: the prompt and its true continuation `gt`."""
    return {"prompt": row["prompt"], "continuation": row["gt"]}


def muse_qa(row: dict[str, Any]) -> dict[str, Any]:
    return {"question": row["question"], "answer": row["answer"]}


def load_muse(variant: str, reader: Reader, training: bool, stream: str | None = None) -> BenchmarkData:
    corpus = variant.capitalize()  # news -> News
    split = lambda config, name: _muse_split(corpus, config, name)  # noqa: E731
    measured = [
        *reader.records(split("verbmem", "forget"), muse_verbatim),
        *reader.records(split("knowmem", "forget_qa"), muse_qa),
        *reader.records(split("privleak", "forget"), muse_text),
    ]
    name = f"muse-{variant}"
    if stream is not None:
        folds = [reader.records(split(stream, f"forget_{k}"), muse_text) for k in range(1, 5)]
        requests = [ForgetRequest(id=f"{name}-{stream}-{k}", kind="copyright", records=fold) for k, fold in enumerate(folds, start=1)]
    elif training:
        requests = [ForgetRequest(id=name, kind="copyright", records=reader.records(split("raw", "forget"), muse_text))]
    else:
        requests = [ForgetRequest(id=name, kind="copyright", records=measured)]
    streamed = stream is not None or training
    sets = {
        "retain": reader.records(split("knowmem", "retain_qa"), muse_qa),
        "holdout": reader.records(split("privleak", "holdout"), muse_text),
    }
    shots = {
        "forget": reader.records(split("knowmem", "forget_qa_icl"), muse_qa),
        "retain": reader.records(split("knowmem", "retain_qa_icl"), muse_qa),
    }
    keep = reader.records(split("raw", "retain1"), muse_text) if streamed else []
    return BenchmarkData(
        f"muse:{variant}", "muse", requests, sets,
        measured={r.id: measured for r in requests} if streamed else {},
        shots=shots, train_retain=keep,
    )


# -- WMDP -----------------------------------------------------------------------------------------
WMDP_REPO = "cais/wmdp"
WMDP_CORPORA = "cais/wmdp-corpora"
WMDP_ACCESS = {
    "bio": "the bio forget corpus is gated: request it through the form linked on the cais/wmdp-corpora "
    "dataset card, then put bio-forget-corpus.jsonl in --data-dir",
    "chem": "WMDP publishes no chemistry corpus: unlearn with your own forget file (--forget)",
}


def wmdp_question(row: dict[str, Any]) -> dict[str, Any]:
    """WMDP's columns: question, choices (4), answer (the right choice's index)."""
    return {"question": row["question"], "choices": list(row["choices"]), "answer_index": int(row["answer"])}


def _corpus(domain: str, kind: str) -> HubSplit:
    config = f"{domain}-{kind}-corpus"
    return HubSplit(WMDP_CORPORA, config, "train", (f"{config}/train-*.parquet", f"{config}.jsonl", f"wmdp-corpora/{config}.jsonl"))


def load_wmdp(variant: str, reader: Reader, training: bool) -> BenchmarkData:
    config = f"wmdp-{variant}"
    questions = reader.records(HubSplit(WMDP_REPO, config, "test", (f"{config}/test-*.parquet",)), wmdp_question)
    name = f"wmdp-{variant}"
    if not training:
        return BenchmarkData(f"wmdp:{variant}", "wmdp", [ForgetRequest(id=name, kind="concept", records=questions)])
    forget = _corpus(variant, "forget")
    if variant in WMDP_ACCESS and not reader.has(forget):
        raise DataError(f"wmdp:{variant}: {WMDP_ACCESS[variant]}")
    corpus = reader.records(forget, muse_text)
    keep = reader.records(_corpus(variant, "retain"), muse_text) if variant != "chem" else []
    request = ForgetRequest(id=name, kind="concept", records=corpus)
    return BenchmarkData(f"wmdp:{variant}", "wmdp", [request], {}, measured={name: questions}, train_retain=keep)


# -- the registry ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Benchmark:
    family: str
    variants: tuple[str, ...]
    repos: tuple[str, ...]
    suite: str
    description: str
    streams: tuple[str, ...] = ()


BENCHMARKS: dict[str, Benchmark] = {
    "tofu": Benchmark("tofu", ("forget01", "forget05", "forget10"), (TOFU_REPO,), "tofu",
                      "fictitious authors' QA: forget set with paraphrased and perturbed answers, retain set, real authors, world facts, holdout"),
    "muse": Benchmark("muse", ("news", "books"), ("muse-bench/MUSE-News", "muse-bench/MUSE-Books"), "muse",
                      "news articles / Harry Potter books: raw corpora, VerbMem, KnowMem with in-context shots, PrivLeak splits",
                      streams=("scal", "sust")),
    "wmdp": Benchmark("wmdp", ("bio", "cyber", "chem"), (WMDP_REPO, WMDP_CORPORA), "wmdp",
                      "hazardous-knowledge multiple choice; forget/retain corpora for unlearning (cyber public, bio gated, chem none)"),
}


def benchmark_names() -> list[str]:
    return [f"{b.family}:{v}" for b in BENCHMARKS.values() for v in b.variants]


def parse_name(name: str) -> tuple[Benchmark, str]:
    family, _, variant = name.partition(":")
    names = benchmark_names()
    if family not in BENCHMARKS or variant not in BENCHMARKS[family].variants:
        raise DataError(f"unknown benchmark '{name}'{did_you_mean(name, names)}; valid: {', '.join(names)}")
    return BENCHMARKS[family], variant


def load_benchmark(name: str, data_dir: str | Path | None = None, *, training: bool = False, stream: str | None = None) -> BenchmarkData:
    """Load benchmark `name` from `data_dir` (a local copy of the hub files) or the hub.

    `training`: also the corpora unlearning needs (raw texts, retain sets); without it only what
    evaluation reads. `stream` (MUSE News: "scal" or "sust"): its four folds as four requests.
    """
    bench, variant = parse_name(name)
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"{name}: --data-dir {data_dir}: no such folder")
    if stream is not None and stream not in bench.streams:
        valid = ", ".join(bench.streams) or "none"
        raise DataError(f"{name}: unknown stream '{stream}'; streams: {valid}")
    if stream is not None and variant != "news":
        raise DataError(f"{name}: MUSE publishes the {stream} folds for news only")
    reader = Reader(name, Path(data_dir) if data_dir is not None else None)
    if bench.family == "tofu":
        return load_tofu(variant, reader, training)
    if bench.family == "muse":
        return load_muse(variant, reader, training, stream)
    return load_wmdp(variant, reader, training)
