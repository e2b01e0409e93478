"""The package's shape: no import cycles, a lazy ``import hftl``, a CLI whose help needs neither torch nor
transformers, the same flags as before the settings were split, small modules, and ``hftl.train`` callable."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "hftl"
HEAVY = ("torch", "transformers", "peft", "accelerate", "datasets", "gensim", "matplotlib", "sklearn")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """hftl module -> the hftl modules it imports, at module level, in functions and under TYPE_CHECKING."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".")
                    parts = parts[: len(parts) - node.level + (1 if is_package else 0)]
                    base = ".".join([*parts, base] if base else parts)
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target not in (name, "hftl"):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_between_hftl_modules():
    graph = import_graph()
    assert len(graph) > 40 and sum(map(len, graph.values())) > 100  # the graph really was read
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_library_code_never_imports_a_recipe():
    graph = import_graph()
    offenders = {
        name: sorted(t for t in targets if t.startswith("hftl.recipes"))
        for name, targets in graph.items()
        # the package's lazy public names and the entry points may name recipes; no stage may
        if name not in ("hftl", "hftl.cli", "hftl.train")
        and not name.startswith("hftl.recipes")
        and any(t.startswith("hftl.recipes") for t in targets)
    }
    assert offenders == {}


def test_settings_import_nothing_from_the_features():
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith("hftl.settings"):
            assert targets <= {
                "hftl.errors",
                "hftl.settings.choices",
                *(n for n in graph if n.startswith("hftl.settings")),
            }


def _probe(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_hftl_loads_nothing_heavy():
    loaded = _probe(
        "import json, sys, hftl; hftl.CASES; hftl.RunConfig; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{HEAVY!r} or m.startswith('hftl'))))"
    )
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []
    assert "hftl.recipes.run" not in loaded


def test_help_and_tasks_never_import_torch_or_transformers():
    commands = [["--help"], ["tasks"]] + [
        [name, "--help"]
        for name in ("train", "plan", "push", "predict", "embed", "demo", "advise", "compare", "export")
    ]
    code = (
        "import contextlib, io, json, sys\n"
        "from hftl.cli import main\n"
        "codes = []\n"
        f"for argv in {commands!r}:\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            codes.append(main(argv))\n"
        "        except SystemExit as done:\n"
        "            codes.append(done.code)\n"
        "    assert 'usage' in out.getvalue() or argv == ['tasks'], argv\n"
        "print(json.dumps({'codes': codes, 'heavy': sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{HEAVY[:2]!r})}}))"
    )
    result = _probe(code)
    assert result["codes"] == [0] * len(commands) and result["heavy"] == []


def test_train_flags_are_unchanged():
    from hftl.config import build_parser

    flags = sorted(s for action in build_parser()._actions for s in action.option_strings)
    assert flags == (REPO / "tests" / "snapshots" / "train_flags.txt").read_text().split()


def test_a_fresh_interpreter_sees_hftl_train_callable_no_peft_and_registered_auto_classes():
    """One probe (each costs a full torch + transformers import): ``hftl.train`` called after ``import hftl.train``
    is the function; importing the whole run recipe does not pull in PEFT (a run without LoRA never needs it); after
    ``register_auto_classes`` plain transformers knows hftl's model types."""
    seen = _probe(
        "import json, sys, hftl, hftl.train\n"
        "from hftl.errors import ConfigError\n"
        "try:\n"
        "    hftl.train(case='small_similar')\n"
        "except ConfigError as error:\n"
        "    message = str(error)\n"
        "peft = 'peft' in sys.modules\n"
        "hftl.register_auto_classes()\n"
        "from transformers import AutoConfig\n"
        "print(json.dumps({'error': message, 'peft': peft,\n"
        "                  'type': type(AutoConfig.for_model('hftl-word-vectors')).__name__,\n"
        "                  'pooled': type(AutoConfig.for_model('hftl-pooled-bert')).__name__}))\n"
    )
    assert seen["error"].startswith("no task given")
    assert seen["peft"] is False
    assert (seen["type"], seen["pooled"]) == ("WordVectorsConfig", "PooledBertConfig")


def test_modules_stay_small_and_name_no_issue_numbers():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert len(text.splitlines()) <= 450, f"{path.relative_to(REPO)} has {len(text.splitlines())} lines"
        assert not re.search(r"\bissues? ?#?\d+", text, re.IGNORECASE), (
            f"{path.relative_to(REPO)} names an issue"
        )


@pytest.mark.parametrize(
    "package", sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
)
def test_every_subpackage_has_its_tests_folder(package):
    assert (REPO / "tests" / package).is_dir() or package in ("settings", "backbones")


def test_every_subpackage_is_installed_by_a_plain_pip_install():
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"
