"""The layers of docs/contracts.md hold: each part of unlearnkit imports only parts below it (or
beside it, without a cycle), and each decision has one home."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "unlearnkit"

# Top to bottom. A unit is a subpackage (`methods`) or a top-level module (`plan`).
LAYERS: list[set[str]] = [
    {"__main__", "cli", "commands", "demo", "service"},
    {"engine"},
    {"plan"},
    {"safety"},
    {"methods", "eval", "benchmark", "report"},
    {"training"},
    {"models"},
    {"data"},
    {"__init__", "errors", "files", "hub", "names", "signals", "display", "progress", "registry", "distributed", "sharding"},
]
LAYER_OF = {unit: depth for depth, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """`unlearnkit.methods.gradient` -> `methods`; `unlearnkit.plan` -> `plan`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def import_edges() -> set[tuple[str, str, str]]:
    """(importing unit, imported unit, file) for every `unlearnkit` import, at any depth of the file."""
    edges = set()
    for path in SRC.rglob("*.py"):
        module = ".".join(("unlearnkit", *path.relative_to(SRC).with_suffix("").parts))
        source = unit_of(module)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                if name.startswith("unlearnkit.") and unit_of(name) != source:
                    edges.add((source, unit_of(name), str(path.relative_to(SRC))))
    return edges


def test_every_unit_has_a_layer() -> None:
    units = {unit_of(".".join(("unlearnkit", *p.relative_to(SRC).with_suffix("").parts))) for p in SRC.rglob("*.py")}
    assert units <= set(LAYER_OF), f"add to LAYERS: {sorted(units - set(LAYER_OF))}"


def test_imports_go_down_the_layers() -> None:
    upward = sorted(f"{file}: {a} imports {b}" for a, b, file in import_edges() if LAYER_OF[b] < LAYER_OF[a])
    assert not upward, "\n".join(upward)


def test_no_import_cycles_between_units() -> None:
    graph: dict[str, set[str]] = {}
    for a, b, _ in import_edges():
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail(f"import cycle: {' -> '.join([*path, node, nxt])}")
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_the_layer_rule_can_fail(tmp_path: Path) -> None:
    """The checker sees an upward import inside a function body, not only at the top."""
    code = "def f():\n    from unlearnkit.engine.runner import run_plan\n"
    node = next(n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.ImportFrom))
    assert unit_of(node.module or "") == "engine" and LAYER_OF["engine"] < LAYER_OF["models"]


ONE_HOME = {
    # decision: (pattern, the only file allowed to contain it)
    "atomic rename of a temporary file": (r"\.replace\((path|out|final|tmp\b)", {"files.py", "engine/checkpoints.py"}),
    "os.fsync": (r"os\.fsync\(", {"files.py"}),
    # Which records are questions and which passages is read everywhere; how each is *encoded*
    # (template, EOS) is decided only in data/formatting.py (record_pair).
    "record encoding rule": (r"template=(not|record\.kind)|add_eos=(not|record\.kind)", {"data/formatting.py"}),
    "Subject construction from a loaded model": (r"\bload_model\(", {"models/loading.py", "models/stack.py", "methods/inference_offset.py"}),
}


@pytest.mark.parametrize("decision", sorted(ONE_HOME))
def test_one_home_for_each_decision(decision: str) -> None:
    pattern, homes = ONE_HOME[decision]
    found = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if re.search(pattern, p.read_text(encoding="utf-8"))}
    assert found <= homes, f"{decision} outside its home: {sorted(found - homes)}"


def test_source_comments_cite_only_the_repository() -> None:
    """Comments and docstrings point to docs/ or public sources, never to files users lack."""
    bad = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if re.search(r"§|reference/(methods|metrics)\.md", p.read_text(encoding="utf-8")))
    assert not bad, bad
