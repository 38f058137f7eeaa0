"""Import directions and the CLI/step contract: the library never imports its CLI (nor argparse), the core
never imports the layers built on it, module-level imports have no cycle, and every subcommand that is a step
builds exactly that step's fields from its arguments."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "onnxprune"
#: Layers above the core, in order: a module may import its own layer and those below it, never those above.
LAYERS = ("onnxprune.steps", "onnxprune.recipe", "onnxprune.zoo", "onnxprune.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Modules ``path`` imports (every import statement, or only those executed when the module loads)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:   # `if TYPE_CHECKING:` blocks do not run
        nodes = [n for n in nodes if not (isinstance(n, ast.If) and "TYPE_CHECKING" in ast.dump(n.test))]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(name: str) -> int:
    """-1 for the core, else the index in LAYERS."""
    return next((i for i, top in enumerate(LAYERS) if name == top or name.startswith(top + ".")), -1)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if layer(n) < LAYERS.index("onnxprune.cli")
                                        and n != "onnxprune.__main__"))
def test_the_library_never_imports_its_cli_or_argparse(name):
    found = imports(MODULES[name])
    assert "argparse" not in found and not any(m == "onnxprune.cli" or m.startswith("onnxprune.cli.")
                                               for m in found), name


def test_modules_import_only_their_own_layer_and_below():
    wrong = []
    for name, path in MODULES.items():
        if name == "onnxprune.__main__":
            continue
        for target in imports(path):
            if target.startswith("onnxprune.") and layer(target) > layer(name):
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def cycles(top_level_only: bool) -> list[list[str]]:
    """Back edges found by a depth-first walk of the import graph (none iff the graph has no cycle). An import
    of a module's own ancestor package (``onnxprune.compression.pipeline`` importing ``onnxprune.compression`` for a
    sibling) is not counted: the package's ``__init__`` is part of loading the module itself."""
    graph = {name: {t for t in imports(path, top_level_only) if t in MODULES and t != name
                    and not name.startswith(t + ".")} for name, path in MODULES.items()}
    found, stack, state = [], [], {}

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


@pytest.mark.parametrize("top_level_only", [True, False], ids=["module-level", "all-imports"])
def test_imports_have_no_cycle(top_level_only):
    assert cycles(top_level_only) == []


CLI_ONLY = {"model", "models", "output", "report", "json", "quiet", "help", "run", "command", "debug"}


@pytest.mark.parametrize("kind", ["fold", "prune", "sensitivity", "finetune", "compress", "emit", "bench"])
def test_each_subcommand_builds_its_step_from_exactly_the_step_fields(kind):
    from onnxprune.cli.main import build_parser
    from onnxprune.steps import STEPS

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    dests = {a.dest for a in sub.choices[kind]._actions} - CLI_ONLY - {"help"}
    if kind == "bench":
        dests -= {"json"}
    fields = {f.name for f in dataclasses.fields(STEPS[kind])}
    assert dests == fields
    flags = {o[2:] for a in sub.choices[kind]._actions for o in a.option_strings if o.startswith("--")}
    assert set(STEPS[kind].flags()) <= flags        # a recipe key is the subcommand's long option


#: A command-line flag written into a message: ``--name``.
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _message_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String parts of what the library raises, and of notes and warnings it appends for the user."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        carrier = isinstance(node, ast.Raise) or (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "append"
            and isinstance(node.func.value, ast.Name) and node.func.value.id in ("notes", "warnings"))
        if carrier:
            found += [(c.lineno, c.value) for c in ast.walk(node) if isinstance(c, ast.Constant)
                      and isinstance(c.value, str)]
    return found


def test_library_messages_name_options_not_flags():
    """Errors and notes name options as `keyword` (the CLI writes --flag, a recipe its key): a message that says
    --max-drop is wrong for the Python API and for recipes. ORT's own tool flags are quoted as such."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        for line, text in _message_literals(ast.parse(path.read_text())):
            flags = [f for f in _FLAG.findall(text) if f != "--include_ops_by_config"]
            if flags:
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {', '.join(flags)}")
    assert not offenders, offenders


def test_options_are_written_as_flags_by_the_cli_and_as_keys_in_recipes():
    from onnxprune.cli.common import cli_text
    from onnxprune.errors import OptionStyle, option_text
    from onnxprune.steps import options_as
    message = "`max_drop` needs `eval_data` (held-out) or `data`; `global_ranking` too"
    assert cli_text(message) == "--max-drop needs --eval-data (held-out) or --data; --global too"
    assert options_as(message, OptionStyle.KEY) == "max-drop needs eval-data (held-out) or data; global too"
    assert option_text(message, OptionStyle.PYTHON) == message
    assert option_text("shape {3} and `Not_an_option` stay", OptionStyle.FLAG) == "shape {3} and `Not_an_option` stay"
