"""The package's layout: no import cycle anywhere in alexnet (function-level imports included), no module over
MAX_LINES lines (two at about 300 are allowed a little more: see docs/architecture.md); and the tests' layout:
tests/<package>/test_<module>.py mirroring alexnet's packages, no test module importing another."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "alexnet.data"
TOP = Path(__file__).resolve().parent.parent / "alexnet"
TESTS = Path(__file__).resolve().parent
MAX_LINES = 300
SLACK = 15            # "about 300": train.py and ops/lrn.py sit at ~310


def module_names(root: Path = TOP) -> dict[str, Path]:
    """Dotted name -> file, for every package (its __init__) and module under ``root``."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = ("alexnet", *path.relative_to(root).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``module`` imports anywhere: top level, in functions, under TYPE_CHECKING.

    ``from P import name`` imports the module P.name when there is one, else P itself; importing
    P.x runs P's __init__ too, but a package being initialised is not a cycle, so that is not counted.
    """
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return (found & known) - {module}


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imported(name, path, set(modules)) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}           # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_imports_of_every_kind():
    graph = import_graph()
    assert len(graph) >= 40 and PACKAGE in graph and "alexnet.models" in graph
    assert "alexnet.models.towers" in graph["alexnet.models.summary"]                 # inside a function
    assert f"{PACKAGE}.cache" in graph[f"{PACKAGE}.resolve"]            # from alexnet.data.cache import ...
    assert f"{PACKAGE}.cache" in graph[f"{PACKAGE}.sources"]            # from alexnet.data import cache
    assert f"{PACKAGE}.stats" in graph[f"{PACKAGE}.transforms"]         # under TYPE_CHECKING
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_is_over_the_line_limit():
    lengths = {name: len(path.read_text().splitlines()) for name, path in module_names().items()}
    assert {name: n for name, n in lengths.items() if n > MAX_LINES + SLACK} == {}
    assert {name: n for name, n in lengths.items() if n > MAX_LINES and name.startswith(PACKAGE)} == {}


def test_no_function_is_over_80_lines():
    long = {f"{name}.{node.name}": node.end_lineno - node.lineno + 1
            for name, path in module_names().items() for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80}
    assert long == {}


def private_imports(root: Path = TOP) -> list[str]:
    """``from alexnet.X import _name`` in alexnet's modules, where ``_name`` is private to X: "importer: X._name".

    A private module (``_kernels``) imported by a module of its own package is that package's business, not a
    leak; a private name of another module is.
    """
    modules = module_names(root)
    found = []
    for module, path in modules.items():
        package = module if path.stem == "__init__" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("alexnet"):
                for alias in node.names:
                    own_module = f"{node.module}.{alias.name}" in modules and node.module == package
                    if alias.name.startswith("_") and not alias.name.endswith("__") and not own_module:
                        found.append(f"{module}: {node.module}.{alias.name}")
    return found


def test_no_private_name_is_imported_from_another_module():
    assert private_imports() == []


def test_exit_codes_are_mapped_in_main_alone():
    """No command module turns a caught error into an exit status: the error types carry their exit codes
    (alexnet.errors.Failure) and cli.main applies them. Only main's own handlers return a status from an except."""
    offenders = []
    for name, path in module_names().items():
        if not name.startswith("alexnet.cli"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef) or (name == "alexnet.cli.main" and function.name == "main"):
                continue
            for handler in ast.walk(function):
                if isinstance(handler, ast.ExceptHandler):
                    returns = [n for n in ast.walk(handler) if isinstance(n, ast.Return) and n.value is not None]
                    offenders += [f"{name}.{function.name}:{n.lineno}" for n in returns
                                  if not (isinstance(n.value, ast.Constant) and isinstance(n.value.value, bool))
                                  and not isinstance(n.value, ast.Compare)]
    assert offenders == []


def test_the_top_level_holds_at_most_ten_modules():
    """The package shows its architecture: commands in cli/, training in train/, inference/, interchange/, serve/,
    study/, compare/, inspection/, util/, models/, ops/, data/; at the top only what every one of them shares."""
    top = sorted(path.name for path in TOP.glob("*.py"))
    assert len(top) <= 10, top
    packages = {path.name for path in TOP.iterdir() if (path / "__init__.py").is_file()}
    assert {"cli", "train", "inference", "interchange", "serve", "study", "compare", "inspection", "util", "models",
            "ops", "data"} <= packages


def test_one_atomic_writer():
    """Files are replaced in one place, alexnet.util.atomic (the data cache, a folder, is renamed into place by
    data.cache's installer): no module renames a temporary file of its own or makes one with mkstemp."""
    allowed = {"alexnet.util.atomic": {"replace", "mkstemp"}, "alexnet.data.cache": {"replace"}}
    found = {}
    for name, path in module_names().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in ("replace", "rename", "mkstemp") \
                    and isinstance(node.value, ast.Name) and node.value.id in ("os", "tempfile") \
                    and node.attr not in allowed.get(name, set()):
                found.setdefault(name, []).append(f"{node.value.id}.{node.attr}:{node.lineno}")
    assert found == {}


CHECKPOINT_KEYS = {"format", "model", "classes", "config", "data", "state_dict", "optimizer", "schedule", "position",
                   "history", "best", "rng"}
HOLDERS = {"ckpt", "checkpoint", "obj", "info", "resumed", "saved", "training"}   # names that hold a loaded one


def checkpoint_key_readers() -> dict[str, list[str]]:
    """Modules that read a checkpoint's entries by string: ``ckpt["model"]``, ``info.get("config")``,
    ``load_checkpoint(path)["config"]``, where the subscripted value is named like a checkpoint or is a load."""
    def holds(node) -> bool:
        if isinstance(node, ast.Call):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            return called in ("load_checkpoint", "load")
        return (isinstance(node, ast.Name) and node.id in HOLDERS) or \
            (isinstance(node, ast.Attribute) and node.attr in HOLDERS)
    found: dict[str, list[str]] = {}
    for name, path in module_names().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            key = None
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and holds(node.value):
                key = node.slice.value
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                    and node.args and isinstance(node.args[0], ast.Constant) and holds(node.func.value):
                key = node.args[0].value
            if key in CHECKPOINT_KEYS:
                found.setdefault(name, []).append(f"{key}:{node.lineno}")
    return found


def test_checkpoint_keys_are_read_by_string_in_three_modules_at_most():
    """The checkpoint is a type (alexnet.checkpoint.Checkpoint); only it, the training position it carries
    (train.state) and the reader of every weight file (alexnet.weights) see the dict's keys."""
    assert set(checkpoint_key_readers()) <= {"alexnet.checkpoint", "alexnet.train.state", "alexnet.weights"}
    assert checkpoint_key_readers()["alexnet.checkpoint"]          # the check sees what it is meant to see


REPO_WIDE_TESTS = {"test_layout.py", "test_docs.py"}      # the repository's shape, not one module's behaviour


def all_test_files() -> list[Path]:
    return sorted(TESTS.rglob("test_*.py"))


def test_tests_mirror_the_packages():
    """Every test file sits in tests/<folder>/ named after an alexnet package (or bench/, the benchmarks' smoke
    tests), one level down; in tests/ itself only the repository-wide tests and those of the top-level modules
    (tests/test_checkpoint.py for alexnet/checkpoint.py)."""
    packages = {path.name for path in TOP.iterdir() if (path / "__init__.py").is_file()}
    top_modules = {f"test_{path.stem}.py" for path in TOP.glob("*.py") if not path.stem.startswith("_")}
    misplaced = []
    for path in all_test_files():
        folder = path.parent.relative_to(TESTS).parts
        if folder == ():
            if path.name not in REPO_WIDE_TESTS | top_modules:
                misplaced.append(str(path.relative_to(TESTS)))
        elif len(folder) != 1 or folder[0] not in packages | {"bench"}:
            misplaced.append(str(path.relative_to(TESTS)))
    assert len(all_test_files()) >= 40 and misplaced == []


def test_test_file_names_are_unique_and_the_folders_are_not_packages():
    """pytest imports test files by their base name (its default "prepend" import mode, no __init__.py in the
    test folders): two tests/*/test_x.py would collide."""
    names = [path.name for path in all_test_files()]
    assert sorted(name for name in set(names) if names.count(name) > 1) == []
    assert sorted(str(p.relative_to(TESTS)) for p in TESTS.rglob("__init__.py")) == []


def imported_test_modules(source: str, test_modules: set[str]) -> list[str]:
    """The test modules (of ``test_modules``, or any ``test_*``) that ``source`` imports anywhere, top level or in
    a function: ``import test_x``, ``from test_x import y``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        found += [name for name in names
                  if name.split(".")[0] in test_modules or name.split(".")[0].startswith("test_")]
    return found


def test_no_test_module_imports_another():
    """Helpers shared by tests are fixtures in tests/conftest.py or live in helper modules (data_fixtures,
    serve_fixtures, ...), never in a test module another one imports."""
    assert sorted(imported_test_modules("import os\ndef f():\n    from test_a import b\nimport test_c as d\n",
                                        set())) == ["test_a", "test_c"]
    stems = {path.stem for path in all_test_files()}
    found = {str(path.relative_to(TESTS)): imports for path in all_test_files()
             if (imports := imported_test_modules(path.read_text(), stems))}
    assert found == {}
