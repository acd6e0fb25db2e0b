"""The built-in world: determinism, schema validity, no leakage between splits, 2-hop answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from unlearnkit.data.loaders import load_records, load_requests
from unlearnkit.benchmark.world import build_world
from unlearnkit.data.world import WORLD_FILES, load_world
from unlearnkit.benchmark.world_templates import ATTRIBUTES
from unlearnkit.errors import DataError, UnlearnkitError


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_world(tmp_path_factory.mktemp("small"), seed=3, size="small", num_requests=3)


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_world(tmp_path_factory.mktemp("stream"), seed=0, size="stream", num_requests=100)


@pytest.fixture(params=["small", "stream"])
def any_world(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(request.param)


# The files made from the world's own seed only (real facts and text come from packages).
PEOPLE_FILES = ("people.jsonl", "requests.jsonl", "retain.jsonl", "neighbours.jsonl", "holdout.jsonl")
SMALL_PEOPLE_DIGEST = "2bef6ac015dc4e22fd3a1b69b410591c327acb03fe2a146c0cd00d9779da6ef0"


def _all_qa(world) -> list:
    records = [r for q in world.requests for r in [*q.records, *q.probes]]
    records += world.retain + world.neighbours + world.holdout + world.real_facts
    return [r for r in records if r.kind == "qa"]


def test_same_seed_gives_byte_identical_files(tmp_path: Path, small: Path) -> None:
    again = build_world(tmp_path / "again", seed=3, size="small", num_requests=3)
    for name in WORLD_FILES:
        assert (again / name).read_bytes() == (small / name).read_bytes(), name
    other = build_world(tmp_path / "other", seed=4, size="small", num_requests=3)
    assert (other / "people.jsonl").read_bytes() != (small / "people.jsonl").read_bytes()


def test_every_file_loads_with_the_project_loaders(small: Path) -> None:
    requests = load_requests(small / "requests.jsonl")
    assert [r.id for r in requests] == ["r1", "r2", "r3"]
    assert all(r.kind == "privacy" and r.probes for r in requests)
    assert len({r.received_at for r in requests}) == 3
    for name in ("retain", "neighbours", "holdout", "real_facts", "general_text"):
        assert load_records(small / f"{name}.jsonl"), name
    world = load_world(small)
    assert len(world.people) == len(set(p.name for p in world.people.values()))


def test_records_carry_the_contract_fields(small: Path) -> None:
    world = load_world(small)
    ids = []
    for record in [r for q in world.requests for r in [*q.records, *q.probes]] + world.retain + world.neighbours + world.holdout:
        ids.append(record.id)
        assert record.meta["type"] in ("fact", "bio", "2hop")
        assert record.meta["person"] in world.people
        if record.meta["type"] == "bio":
            assert len(record.passage_text.split()) >= 150
            assert record.prompt and record.continuation
            assert len(record.prompt.split()) < len(record.continuation.split())
        else:
            assert len(record.paraphrased_questions) >= 2 and record.paraphrased_answer
            assert len(record.perturbed_answers) >= 3
            assert len(set(record.perturbed_answers)) == len(record.perturbed_answers)
    assert len(ids) == len(set(ids))
    for person in world.people.values():
        assert set(ATTRIBUTES) <= set(person.attributes)


def test_no_leakage_between_splits(any_world: Path) -> None:
    world = load_world(any_world)
    splits = world.meta["splits"]
    forgotten = [pid for q in world.requests for pid in splits[q.id]]
    assert len(forgotten) == len(set(forgotten)), "a person in two requests"
    kept = set(splits["retain"]) | set(splits["holdout"]) | set(splits["neighbours"])
    for request in world.requests:
        people = {r.meta["person"] for r in [*request.records, *request.probes]}
        assert people == set(splits[request.id])
        assert not people & kept
    names = {pid: world.people[pid].name for pid in forgotten}
    for split in ("retain", "neighbours", "holdout"):
        for record in getattr(world, split):
            assert record.meta["split"] == split and record.meta["person"] in splits[split]
            text = record.passage_text if record.kind == "passage" else f"{record.question} {record.answer}"
            assert not any(name in text for name in names.values()), f"{record.id} mentions a forgotten person"
    for record in _all_qa(world):
        assert record.answer.lower() not in {w.lower() for w in record.perturbed_answers}, record.id
    questions = [r.question for r in _all_qa(world)]
    assert len(questions) == len(set(questions))


def test_neighbours_are_related_to_forgotten_people_and_holdout_is_not_trained(small: Path) -> None:
    world = load_world(small)
    splits = world.meta["splits"]
    targets = {rel["to"] for rel in world.meta["relations"] if rel["from"] in {p for q in world.requests for p in splits[q.id]}}
    assert targets == set(splits["neighbours"])
    trained_people = {r.meta["person"] for r in world.trained()}
    assert not trained_people & set(splits["holdout"])
    assert trained_people == set(world.people) - set(splits["holdout"])
    oracle_final = {r.meta["person"] for r in world.trained(without=3)}
    assert not oracle_final & {p for q in world.requests for p in splits[q.id]}


def test_two_hop_probes_resolve_through_the_relation(any_world: Path) -> None:
    world = load_world(any_world)
    probes = [p for q in world.requests for p in q.probes]
    assert probes
    for probe in probes:
        person = world.people[probe.meta["person"]]
        via = world.people[person.relations[probe.meta["relation"]]]
        assert probe.meta["via"] == via.id
        assert probe.answer == via.attributes[probe.meta["attribute"]]
        assert person.name in probe.question and via.name not in probe.question
        # The hop itself is a trained fact of the forgotten person.
        hop = next(r for r in world.requests[int(probe.meta["split"][1:]) - 1].records if r.id == f"{person.id}-{probe.meta['relation']}")
        assert hop.answer == via.name


def test_relations_are_consistent(any_world: Path) -> None:
    world = load_world(any_world)
    for person in world.people.values():
        for kind, other_id in person.relations.items():
            other = world.people[other_id]
            if kind == "sibling":
                assert person.name.split(" ", 1)[1] == other.name.split(" ", 1)[1]
                assert person.attributes["mother"] == other.attributes["mother"]
            if kind == "mentor":
                assert int(other.attributes["birth_year"]) < int(person.attributes["birth_year"])


def test_real_facts_and_general_text(small: Path) -> None:
    world = load_world(small)
    capitals = {r.question: r.answer for r in world.real_facts if r.meta["attribute"] == "capital"}
    if "What is the capital of France?" in capitals:
        assert capitals["What is the capital of France?"] == "Paris"
    assert all(r.meta["split"] == "real" for r in world.real_facts)
    assert all(r.kind == "passage" and len(r.text.split()) >= 40 for r in world.general_text)


def test_the_stream_world_has_one_person_per_request_and_fewer_facts(stream: Path) -> None:
    import hashlib

    world = load_world(stream)
    splits = world.meta["splits"]
    assert len(world.requests) == 100 and all(len(splits[q.id]) == 1 for q in world.requests)
    assert (len(splits["neighbours"]), len(splits["retain"]), len(splits["holdout"])) == (20, 10, 16)
    assert len({p.name for p in world.people.values()}) == len(world.people) == 146  # beyond the 60 listed surnames
    told = {"birthplace", "profession", "work"}
    for request in world.requests:
        facts = [r for r in request.records if r.kind == "qa"]
        assert {r.meta["attribute"] for r in facts} - told == set(world.people[splits[request.id][0]].relations)
        assert len(facts) == 4 and sum(r.kind == "passage" for r in request.records) == 1
        assert {p.meta["attribute"] for p in request.probes} <= told  # 2-hop only through taught facts
    for person in world.people.values():
        bio = next(r for r in [*world.retain, *world.neighbours, *world.holdout, *(x for q in world.requests for x in q.records)]
                   if r.kind == "passage" and r.meta["person"] == person.id).passage_text
        assert person.attributes["birthplace"] in bio and person.attributes["work"] in bio
        assert person.attributes["alma_mater"] not in bio and person.attributes["employer"] not in bio
        assert len(bio.split()) < 90
    # The stream size changes no other world: the small world's people and records are what they
    # were before it existed (prepared models are cached by their exact training examples).
    small = build_world(stream.parent / "small-digest", seed=0, size="small", num_requests=3)
    digest = hashlib.sha256(b"".join((small / name).read_bytes() for name in PEOPLE_FILES)).hexdigest()
    assert digest == SMALL_PEOPLE_DIGEST


def test_sizes_and_request_count(tmp_path: Path) -> None:
    tiny = load_world(build_world(tmp_path / "tiny", seed=0, size="tiny", num_requests=2))
    assert len(tiny.requests) == 2 and len(tiny.people) < 10
    with pytest.raises(UnlearnkitError, match="size 'huge'"):
        build_world(tmp_path / "x", size="huge")


def test_load_world_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a world folder"):
        load_world(tmp_path)
    world = build_world(tmp_path / "w", size="tiny")
    lines = (world / "retain.jsonl").read_text().splitlines()
    (world / "retain.jsonl").write_text(lines[0].replace('"answer":', '"answr":') + "\n")
    with pytest.raises(DataError, match="retain.jsonl line 1"):
        load_world(world)


def test_world_command_writes_the_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    result = CliRunner().invoke(app, ["world", "--out", str(tmp_path / "w"), "--size", "tiny", "--requests", "2", "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == sorted(WORLD_FILES)
    assert [r.id for r in load_world(tmp_path / "w").requests] == ["r1", "r2"]


def test_rehearsal_facts_are_real_and_never_the_evaluated_countries(small: Path) -> None:
    from unlearnkit.benchmark.prepare import rehearsal_for

    world = load_world(small)
    evaluated = {r.meta["country"] for r in world.real_facts}
    rehearsal = rehearsal_for(world)
    rehearsed = {r.meta["country"] for r in rehearsal}
    assert rehearsed and not rehearsed & evaluated
    assert len(rehearsal) == 2 * len(rehearsed) and all(r.meta["split"] == "rehearsal" for r in rehearsal)
    assert not {r.question for r in rehearsal} & {r.question for r in world.real_facts}
    capitals = {r.meta["country"]: r.answer for r in rehearsal if r.meta["attribute"] == "capital"}
    assert all(answer not in wrong for r in rehearsal for answer, wrong in [(r.answer, r.perturbed_answers)])
    if "Japan" in capitals:
        assert capitals["Japan"] == "Tokyo"
