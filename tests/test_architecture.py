"""The package's import map (docs/ARCHITECTURE.md) is what the code does: every import of the package's
own modules, at the top of a file or inside a function, goes to a lower layer or stays in its folder, and
no modules import each other in a circle. The map is read from the document's table, so the document
and this test cannot drift apart."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "edge_runtime"
DOC = REPO / "docs" / "ARCHITECTURE.md"


def layer_map() -> dict[str, int]:
    """Folder (or top-level module) → layer, from the rows `| N | `folder/` | …` of the document."""
    rooms = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|\s*(.+?)\s*\|", line)
        if m:
            for name in re.findall(r"`([\w.]+)/?`", m.group(2)):
                rooms[name.removesuffix(".py")] = int(m.group(1))
    return rooms


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `path` imports anywhere in the file (`from edge_runtime import config`
    is the module edge_runtime.config; `from edge_runtime.x import f` is edge_runtime.x)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("edge_runtime"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("edge_runtime"))
    found.discard(name)
    return found


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "edge_runtime"


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def test_the_document_maps_every_folder():
    rooms = layer_map()
    assert rooms.get("util") == 1, "the table's rows are `| layer | `folder/` | ... |`, util/ at layer 1"
    unmapped = sorted({room(m) for m in modules()} - set(rooms))
    assert not unmapped, f"docs/ARCHITECTURE.md does not place {unmapped}: add them to its table"


def test_imports_only_go_down_the_layers():
    rooms = layer_map()
    wrong = []
    for source, targets in graph().items():
        for target in targets:
            a, b = room(source), room(target)
            if a != b and rooms[b] >= rooms[a]:
                wrong.append(f"{source} (layer {rooms[a]}) imports {target} (layer {rooms[b]})")
    assert not wrong, "imports against docs/ARCHITECTURE.md's layers:\n" + "\n".join(sorted(wrong))


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}                  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_modules_import_each_other_in_a_circle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"x": {"y"}, "y": {"y2"}, "y2": {"y"}}, ["y", "y2", "y"]),
])
def test_the_cycle_finder_finds_cycles(edges, expected):
    assert find_cycle(edges) == expected


def test_the_walker_sees_imports_inside_functions_and_relative_ones(tmp_path):
    src = tmp_path / "edge_runtime" / "sinks" / "x.py"
    src.parent.mkdir(parents=True)
    src.write_text("from .log import LogSink\n\ndef f():\n    from edge_runtime import config\n"
                   "    import edge_runtime.util.errors\n")
    known = {"edge_runtime.sinks.log", "edge_runtime.config", "edge_runtime.util.errors"}
    assert imports_of("edge_runtime.sinks.x", src, known) == known


def test_every_command_in_the_table_has_a_main_and_help():
    """cli/main.py's COMMANDS: each module's main answers --help with exit 0, and the daemon's --help
    names it."""
    import importlib

    from edge_runtime.cli.main import COMMANDS, build_parser

    epilog = build_parser().format_help()
    for name, (module_name, _what) in COMMANDS.items():
        module = importlib.import_module(module_name)
        with pytest.raises(SystemExit) as done:
            module.main(["--help"])
        assert done.value.code == 0
        assert f"{name} --help" in epilog.replace("\n", " ")
