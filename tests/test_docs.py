"""The README and the docs agree with the code: the method, suite and attack tables list exactly
the registered entries, the README's plan parses (and is examples/plan.yaml), and every link to
a docs file (or a section of one) points to something that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOC_FILES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]


# -- extraction helpers ------------------------------------------------------------------------
def outside_code(text: str) -> list[str]:
    """The lines of a markdown text that are not inside ``` fences."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").replace("\\|", "\0").split("|")]


def tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every pipe table of a markdown text: (header cells, body rows), the separator dropped."""
    found: list[tuple[list[str], list[list[str]]]] = []
    block: list[str] = []
    for line in [*outside_code(text), ""]:
        if line.lstrip().startswith("|"):
            block.append(line)
            continue
        if len(block) >= 2 and set(block[1].replace("|", "").strip()) <= set("-: "):
            found.append((cells(block[0]), [cells(row) for row in block[2:]]))
        block = []
    return found


def table(text: str, first_header: str) -> list[list[str]]:
    """The body rows of the one table whose first header cell is `first_header`."""
    matches = [rows for header, rows in tables(text) if header and header[0] == first_header]
    assert len(matches) == 1, f"expected one table headed '{first_header}', found {len(matches)}"
    return matches[0]


def name_of(cell: str) -> str:
    """`npo_gd` -> npo_gd (a registry name is written as code in its table)."""
    match = re.fullmatch(r"`([^`]+)`", cell)
    assert match, f"table cell {cell!r} is not a `name`"
    return match.group(1)


def mismatch(listed: list[str], registered: list[str]) -> list[str]:
    """Problems between a table's names and a registry's: missing, unknown, or listed twice."""
    problems = [f"'{n}' is registered but not in the table" for n in registered if n not in listed]
    problems += [f"'{n}' is in the table but not registered" for n in listed if n not in registered]
    problems += [f"'{n}' is listed {listed.count(n)} times" for n in sorted(set(listed)) if listed.count(n) > 1]
    return problems


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in outside_code(path.read_text(encoding="utf-8")):
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            out.add(base if count == 0 else f"{base}-{count}")
            seen[base] = count + 1
    return out


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Links and `docs/NAME.md` mentions in `path` whose file (or section) does not exist."""
    text = "\n".join(outside_code(path.read_text(encoding="utf-8")))
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{path.name}: link ({target}): no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{path.name}: link ({target}): no section '#{anchor}' in {linked.name}")
    prose = re.sub(r"\]\([^)\s]+\)", "]()", text)  # link targets are checked above
    for mention in re.findall(r"(?<![\w./-])(docs/[\w.-]+\.md)", prose):
        if not (root / mention).exists():
            problems.append(f"{path.name}: mentions {mention}: no such file")
    return problems


# -- the helpers can fail ----------------------------------------------------------------------
SAMPLE = """
Some text.

| method | family | needs | what |
|---|---|---|---|
| `ga` | gradient | – | ascent |
| `made_up` | magic | retain | nothing |

```
| method | not | a | table |
```
"""


def test_the_extraction_finds_rows_and_reports_mismatches() -> None:
    rows = table(SAMPLE, "method")
    assert [name_of(r[0]) for r in rows] == ["ga", "made_up"] and rows[1][1] == "magic"
    problems = mismatch(["ga", "made_up", "ga"], ["ga", "npo"])
    assert "'npo' is registered but not in the table" in problems
    assert "'made_up' is in the table but not registered" in problems
    assert "'ga' is listed 2 times" in problems
    with pytest.raises(AssertionError):
        table(SAMPLE, "suite")  # no such table
    with pytest.raises(AssertionError):
        name_of("ga")  # a name must be written as code


def test_the_link_checker_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "real.md").write_text("# Real page\n\n## A section\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/real.md) [ok too](docs/real.md#a-section) [web](https://example.org)\n"
        "[gone](docs/gone.md) [no section](docs/real.md#nowhere) see `docs/missing.md`\n"
        "```\n[in code](docs/ignored.md)\n```\n"
    )
    assert broken_links(page, tmp_path) == [
        "README.md: link (docs/gone.md): no such file",
        "README.md: link (docs/real.md#nowhere): no section '#nowhere' in real.md",
        "README.md: mentions docs/missing.md: no such file",
    ]


def test_github_anchor_slugs() -> None:
    assert slug("The demo's default") == "the-demos-default"
    assert slug("On the merged target (the shipped setting)") == "on-the-merged-target-the-shipped-setting"
    assert slug("Cost per step (`bench/sequential.py`)") == "cost-per-step-benchsequentialpy"


# -- the README against the registries ---------------------------------------------------------
def test_readme_method_table_matches_the_registry() -> None:
    from unlearnkit.methods.base import METHODS

    rows = table(README.read_text(encoding="utf-8"), "method")
    listed = [name_of(row[0]) for row in rows]
    # Only the package's own methods: a test module may register one of its own.
    shipped = [name for name, cls in METHODS.items() if cls.__module__.startswith("unlearnkit.")]
    assert not mismatch(listed, shipped), "\n".join(mismatch(listed, shipped))
    for row in rows:
        cls = METHODS.get(name_of(row[0]))
        assert row[1] == cls.family, f"{row[0]}: README family '{row[1]}', class family '{cls.family}'"
        needs = set() if row[2] in ("–", "-", "") else {n.strip() for n in row[2].split(",")}
        assert needs == set(cls.needs), f"{row[0]}: README needs {sorted(needs)}, class needs {sorted(cls.needs)}"


def test_readme_suite_table_matches_the_suites() -> None:
    from unlearnkit.eval.suites import SUITES

    listed = [name_of(row[0]) for row in table(README.read_text(encoding="utf-8"), "suite")]
    assert not mismatch(listed, list(SUITES)), "\n".join(mismatch(listed, list(SUITES)))


def test_readme_attack_table_matches_the_registry() -> None:
    from unlearnkit.eval.attacks import ATTACKS

    listed = [name_of(row[0]) for row in table(README.read_text(encoding="utf-8"), "attack")]
    assert not mismatch(listed, ATTACKS.names()), "\n".join(mismatch(listed, ATTACKS.names()))


# -- the README's plan -------------------------------------------------------------------------
def yaml_blocks(text: str) -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_plan_block_parses_and_is_the_example_plan() -> None:
    from unlearnkit.plan import parse_plan

    blocks = yaml_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "README.md has no ```yaml plan block"
    for block in blocks:
        parse_plan(yaml.safe_load(block), "README.md", check_files=False)
    example = yaml.safe_load((ROOT / "examples" / "plan.yaml").read_text(encoding="utf-8"))
    assert yaml.safe_load(blocks[0]) == example, "README's plan block differs from examples/plan.yaml"


def test_the_example_plan_loads_with_its_files() -> None:
    from unlearnkit.plan import load_plan

    plan = load_plan(ROOT / "examples" / "plan.yaml")  # checks that every named file exists
    assert plan.model == "default" and plan.label == "npo_gd"
    assert [s.file for s in plan.requests] == [ROOT / "examples" / "requests.jsonl"]
    assert plan.retain == [ROOT / "examples" / "retain.jsonl"]
    assert plan.output.resolve() == ROOT / "runs" / "example"  # what `unlearnkit ledger runs/example` reads


# -- links -------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_docs_link_points_to_a_file(path: Path) -> None:
    problems = broken_links(path)
    assert not problems, "\n".join(problems)
