import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import importlib, pkgutil, sys
import scratch
for info in pkgutil.walk_packages(scratch.__path__, "scratch."):
    importlib.import_module(info.name)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"tensorflow", "keras"})
print(",".join(heavy))
"""
# The network description sits below everything: numpy only, and none of the packages
# that import it (parity -> reference -> scratch -> spec).
ABOVE_SPEC = ("tensorflow", "keras", "scratch", "reference", "parity")


@pytest.mark.parametrize("package", ["scratch", "spec"])
def test_importing_every_module_imports_neither_tensorflow_nor_keras(package):
    probe = PROBE.replace("scratch", package)
    if package == "spec":
        probe = probe.replace('{"tensorflow", "keras"}', repr(set(ABOVE_SPEC)))
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_probe_detects_tensorflow_when_it_is_imported():
    # The probe above must be able to fail: importing keras shows up in its output.
    probe = PROBE.replace("import scratch\n", "import scratch, keras\n")
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert "keras" in result.stdout


# -- import directions: parity -> reference -> scratch, and no cycle ------------------------

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("scratch", "reference", "parity")  # each may import only itself and those before it


def import_graph(root: Path) -> dict[str, set[str]]:
    """``{module: modules of LAYERS it imports}``, function-level imports included (an
    import inside a function is a dependency all the same), read with ``ast``."""
    graph = {}
    for package in LAYERS:
        for file in sorted((root / package).rglob("*.py")):
            name = ".".join(file.relative_to(root).with_suffix("").parts)
            name = name.removesuffix(".__init__")
            graph[name] = _imported(ast.parse(file.read_text(), filename=str(file)))
    known = set(graph)
    return {m: {t for t in targets if t in known and t != m} for m, targets in graph.items()}


def _imported(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)  # `from parity import runner` imports parity.runner too
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] in LAYERS}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    rank = {package: i for i, package in enumerate(LAYERS)}
    return sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                  if rank[t.split(".")[0]] > rank[m.split(".")[0]])  # fmt: skip


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every set of modules that import each other, directly or not (strongly connected
    components of more than one module), by reachability."""
    reach = {m: _reachable(graph, m) for m in graph}
    groups = {tuple(sorted(m2 for m2 in reach[m] if m in reach[m2])) for m in graph}
    return sorted(list(g) for g in groups if len(g) > 1)


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_imports_go_parity_to_reference_to_scratch_only():
    assert upward_imports(import_graph(ROOT)) == []


def test_no_module_imports_itself_back_through_others():
    assert cycles(import_graph(ROOT)) == []


def _fake_tree(tmp_path, files: dict[str, str]) -> Path:
    for package in LAYERS:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_import_checks_find_an_upward_import_and_a_cycle(tmp_path):
    # The two checks above must be able to fail: what they would have found before this
    # round (reference/testing.py loading MNIST through parity; cli <-> selftest).
    root = _fake_tree(tmp_path, {
        "reference/testing.py": "def load():\n    from parity.data import load_mnist\n",
        "parity/data.py": "", "parity/cli.py": "from parity.selftest import main\n",
        "parity/selftest.py": "def f():\n    from parity.cli import integer\n",
    })  # fmt: skip
    graph = import_graph(root)
    assert upward_imports(graph) == ["reference.testing -> parity.data"]
    assert cycles(graph) == [["parity.cli", "parity.selftest"]]


# -- TensorFlow itself: one module of reference/ (issue 12 item 5) --------------------------

TF_MODULE = "reference.tf_backend"  # the one module that may import tensorflow


def tensorflow_importers(root: Path) -> list[str]:
    """Modules of LAYERS that import tensorflow (function-level imports included)."""
    found = []
    for package in LAYERS:
        for file in sorted((root / package).rglob("*.py")):
            tree = ast.parse(file.read_text(), filename=str(file))
            imported = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    imported.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module:
                    imported.add(node.module)
            if any(name.split(".")[0] == "tensorflow" for name in imported):
                found.append(".".join(file.relative_to(root).with_suffix("").parts))
    return found


def test_only_the_tensorflow_module_imports_tensorflow():
    assert tensorflow_importers(ROOT) == [TF_MODULE]


def test_the_tensorflow_check_finds_a_second_importer(tmp_path):
    root = _fake_tree(tmp_path, {
        "reference/tf_backend.py": "import tensorflow as tf\n",
        "reference/probes.py": "def f():\n    from tensorflow import constant\n",
    })  # fmt: skip
    assert tensorflow_importers(root) == ["reference.probes", TF_MODULE]
