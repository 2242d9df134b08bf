"""The README's promises: exactly two commands for a fresh machine, and CI runs the second."""

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_readme_has_two_commands():
    commands = quick_start_commands()
    assert len(commands) == 2
    assert "streamlit run app.py" in commands[0] and "requirements.txt" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert quick_start_commands()[1] in ci


def test_requirements_are_pinned_to_ranges():
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            assert ">=" in line and "<" in line, line


# The import rules of docs/ARCHITECTURE.md ("Layers and what may import what"), read from the
# document itself: its layer table says which folders and files sit in which layer, and its
# module table which modules import TensorFlow.

APP_SOURCES = ("alexnet_core", "alexnet_ui", "pages", "app.py")  # the modules the rules cover
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every table of a Markdown text: its rows (the header first, no separator row) as lists of cells."""
    tables, rows = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(set(cell) <= set("-: ") for cell in cells):
                rows.append(cells)
        elif rows:
            tables.append(rows)
            rows = []
    return tables


def table_with_header(text: str, first_cell: str) -> list[list[str]]:
    """The rows (header left out) of the one table whose header starts with `first_cell`."""
    found = [table for table in markdown_tables(text) if table[0][0].lower() == first_cell]
    assert len(found) == 1, f"docs/ARCHITECTURE.md has {len(found)} tables headed {first_cell!r}"
    return found[0][1:]


def layers_from_docs(text: str) -> list[tuple[str, list[str]]]:
    """The layers, top first: (name, the folders (ending in /) and files it holds, from the repository root)."""
    section = text.split("## Layers and what may import what", 1)[1].split("\n## ", 1)[0]
    return [(row[0], re.findall(r"`([^`]+)`", row[1])) for row in table_with_header(section, "layer")]


def find_modules(root: Path, sources=APP_SOURCES) -> dict[str, Path]:
    """Every module under `sources` by its dotted name (a package by its __init__.py; pages/x.py is `pages.x`)."""
    modules = {}
    for source in sources:
        files = [root / source] if source.endswith(".py") else sorted((root / source).rglob("*.py"))
        for path in files:
            parts = path.relative_to(root).with_suffix("").parts
            if "__pycache__" not in parts:
                modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_names(name: str, path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every import anywhere in a module, the lazy ones inside functions
    included; `from X import y` gives both X and X.y (which is a module when y is a submodule)."""
    import ast

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importer's package, one level up per extra dot
                parts = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*"]
    return found


def resolve(name: str, modules) -> str | None:
    """The module an imported name lands in: the longest leading part of it that is a module of ours."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """importer -> {imported module: first line}. Importing a module also runs its packages'
    __init__.py, so those count too, except the importer's own packages (already running)."""
    graph = {}
    for name, path in modules.items():
        own = {".".join(name.split(".")[:end]) for end in range(1, len(name.split(".")) + 1)}
        edges = graph.setdefault(name, {})
        for line, imported in imported_names(name, path):
            target = resolve(imported, modules)
            while target:
                if target not in own:
                    edges.setdefault(target, line)
                target = target.rpartition(".")[0] or None
                target = target if target in modules else None
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (a path back to its start) for every group of modules that import each other."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def strongconnect(node):  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, {}):
            if succ not in index:
                strongconnect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    cycles = []
    for group in groups:  # the shortest way from the group's first module back to itself
        start = min(group)
        paths, seen = [[start]], {start}
        while paths:
            path = paths.pop(0)
            succs = sorted(s for s in graph[path[-1]] if s in group)
            if start in succs:
                cycles.append([*path, start])
                break
            for succ in succs:
                if succ not in seen:
                    seen.add(succ)
                    paths.append([*path, succ])
    return sorted(cycles)


def layer_of(path: Path, root: Path, layers) -> int | None:
    """The layer a file sits in, counted from the bottom (1), by the most specific entry that names it."""
    rel = path.relative_to(root).as_posix()
    matches = [(len(entry), len(layers) - i) for i, (_, entries) in enumerate(layers) for entry in entries
               if rel == entry or (entry.endswith("/") and rel.startswith(entry))]
    return max(matches)[1] if matches else None


def import_problems(root: Path, layers, sources=APP_SOURCES) -> list[str]:
    """Every break of the import rules among the modules under `sources`, in words."""
    modules = find_modules(root, sources)
    graph = import_graph(modules)
    names = {layer: name for layer, name in zip(range(len(layers), 0, -1), (n for n, _ in layers), strict=True)}
    problems = []
    for cycle in find_cycles(graph):
        steps = [f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
        problems.append("import cycle: " + " -> ".join([*steps, cycle[-1]]))
    level = {name: layer_of(path, root, layers) for name, path in modules.items()}
    problems += [f"{name} ({modules[name].relative_to(root)}) is in no layer of docs/ARCHITECTURE.md"
                 for name in sorted(modules) if level[name] is None]
    for name in sorted(modules):
        found = imported_names(name, modules[name])
        # `from x import y` names x and x.y: only the most specific name of a line is reported
        for line, imported in sorted({(line, resolve(imported, modules) or imported) for line, imported in found
                                      if not any(ln == line and other.startswith(imported + ".")
                                                 for ln, other in found)}):
            where = f"{name} (line {line}) imports {imported}"
            top = imported.split(".")[0]
            if top == "pages":
                problems.append(f"{where}: nothing imports a page (shared page code goes in alexnet_ui)")
            elif name.split(".")[0] == "alexnet_core" and top in ("streamlit", "alexnet_ui"):
                problems.append(f"{where}: alexnet_core never imports Streamlit or the app's UI")
            target = resolve(imported, modules)
            if target and level[name] and level[target] and level[target] > level[name]:
                problems.append(f"{where}: layer {names[level[name]]!r} imports from {names[level[target]]!r}, "
                                f"which sits above it")
    return sorted(set(problems), key=problems.index)


def test_no_import_cycles_and_no_upward_imports():
    """docs/ARCHITECTURE.md: modules import only from their own layer and those below, never in a
    circle; alexnet_core never imports Streamlit or alexnet_ui; nothing imports a page."""
    layers = layers_from_docs(ARCHITECTURE.read_text())
    assert [name for name, _ in layers][:3] == ["app", "pages", "ui"], layers
    problems = import_problems(ROOT, layers)
    assert not problems, "\n".join(problems)


def test_nothing_anywhere_imports_a_page():
    """Tests and benchmarks included: a page is a script Streamlit runs, never a module to import."""
    files = [*find_modules(ROOT).values(), *(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]
    bad = [f"{path.relative_to(ROOT)}:{line} imports {name}" for path in files
           for line, name in imported_names("x", path) if name.split(".")[0] == "pages"]
    assert not bad, bad


def _plant(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_the_import_rules_catch_what_they_forbid(tmp_path):
    """A planted tree that breaks every rule: the checker names each break, and only those."""
    layers = layers_from_docs(ARCHITECTURE.read_text())
    root = _plant(tmp_path, {
        "alexnet_core/__init__.py": "from alexnet_core import errors\n",
        "alexnet_core/errors.py": "",
        "alexnet_core/store/__init__.py": "",
        "alexnet_core/store/layout.py": "from alexnet_core.errors import AlexNetError\n",
        # a lazy import inside a function, upwards; predict imports inputs back: a cycle
        "alexnet_core/inputs/__init__.py": "",
        "alexnet_core/inputs/data.py": "def f():\n    from alexnet_core.predict.inference import g\n",
        "alexnet_core/predict/__init__.py": "",
        "alexnet_core/predict/inference.py": "from alexnet_core.inputs import data\nfrom . import helper\n",
        "alexnet_core/predict/helper.py": "import streamlit\n",
        # `from package import submodule`, upwards, and a relative import
        "alexnet_core/store/catalog.py": "from ..train import launcher\n",
        "alexnet_core/train/__init__.py": "",
        "alexnet_core/train/launcher.py": "import alexnet_core.store.catalog\n",
        "alexnet_core/stray/__init__.py": "",
        "alexnet_ui/__init__.py": "",
        "alexnet_ui/common.py": "import alexnet_core.store.layout\nfrom pages import home\n",
        "pages/home.py": "from alexnet_ui import common\n",
        "app.py": "import streamlit\n",
    })
    problems = import_problems(root, layers)
    assert problems == [
        "import cycle: alexnet_core.inputs.data (line 2) -> alexnet_core.predict.inference (line 1) -> "
        "alexnet_core.inputs.data",
        "import cycle: alexnet_core.store.catalog (line 1) -> alexnet_core.train.launcher (line 1) -> "
        "alexnet_core.store.catalog",
        "import cycle: alexnet_ui.common (line 2) -> pages.home (line 1) -> alexnet_ui.common",
        "alexnet_core.stray (alexnet_core/stray/__init__.py) is in no layer of docs/ARCHITECTURE.md",
        "alexnet_core.inputs.data (line 2) imports alexnet_core.predict.inference: layer 'inputs' imports "
        "from 'predict', which sits above it",
        "alexnet_core.predict.helper (line 1) imports streamlit: alexnet_core never imports Streamlit or the "
        "app's UI",
        "alexnet_core.store.catalog (line 1) imports alexnet_core.train.launcher: layer 'store' imports from "
        "'train', which sits above it",
        "alexnet_ui.common (line 2) imports pages.home: nothing imports a page (shared page code goes in "
        "alexnet_ui)",
        "alexnet_ui.common (line 2) imports pages.home: layer 'ui' imports from 'pages', which sits above it",
    ], "\n".join(problems)
    # The same tree without the planted breaks passes.
    for rel in ("alexnet_core/inputs/data.py", "alexnet_core/predict/helper.py", "alexnet_core/store/catalog.py",
                "alexnet_ui/common.py"):
        (root / rel).write_text("import numpy\nfrom alexnet_core import errors\n")
    (root / "alexnet_core/stray/__init__.py").unlink()
    (root / "alexnet_core/stray").rmdir()
    assert import_problems(root, layers) == []


# TensorFlow takes seconds to import: the modules the table says import none of it must not.

_IMPORT_IN_TURN = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
for name in sys.argv[2:]:
    try:
        importlib.import_module(name)
        verdict = "imports tensorflow" if "tensorflow" in sys.modules else "ok"
    except BaseException as exc:
        verdict = f"cannot be imported: {type(exc).__name__}: {exc}"
    print("IMPORTED " + json.dumps([name, verdict]), flush=True)
    if verdict != "ok":
        break
"""


def modules_importing_tensorflow(root: Path, names: list[str]) -> dict[str, str]:
    """Each module imported in a fresh process, or after others that loaded no TensorFlow (their
    imports then prove nothing for it either way): one process in all when none imports it, one
    more after each that does. Returns {module: what went wrong} for the ones that did."""
    import json
    import subprocess
    import sys

    left, wrong = list(names), {}
    while left:
        out = subprocess.run([sys.executable, "-c", _IMPORT_IN_TURN, str(root), *left], capture_output=True,
                             text=True, cwd=root, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        verdicts = [json.loads(line.removeprefix("IMPORTED ")) for line in out.stdout.splitlines()
                    if line.startswith("IMPORTED ")]
        for name, verdict in verdicts:
            left.remove(name)
            if verdict != "ok":
                wrong[name] = verdict
        if left and (not verdicts or verdicts[-1][1] == "ok"):  # the process died importing the next one
            wrong[left.pop(0)] = f"the process died (exit {out.returncode}): {out.stderr.strip()[-300:]}"
    return wrong


def module_table() -> dict[str, str]:
    """The module table of docs/ARCHITECTURE.md: dotted module name -> its "imports TensorFlow" cell.
    A row names a file or a package (ending in /) under alexnet_core/, or under alexnet_ui/ when it says so."""
    rows = table_with_header(ARCHITECTURE.read_text(), "module")
    table = {}
    for row in rows:
        (path,) = re.findall(r"`([^`]+)`", row[0])
        if not path.startswith("alexnet_ui"):
            path = f"alexnet_core/{path}"
        parts = path.removesuffix("/").removesuffix(".py").split("/")
        table[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = row[2]
    return table


def test_every_module_has_a_row_in_the_module_table():
    modules = set(find_modules(ROOT, ("alexnet_core", "alexnet_ui")))
    table = set(module_table())
    assert not modules - table, f"docs/ARCHITECTURE.md's module table has no row for {sorted(modules - table)}"
    assert not table - modules, f"docs/ARCHITECTURE.md's module table names missing modules {sorted(table - modules)}"


def test_modules_the_table_says_import_no_tensorflow_import_none():
    """`no` and `when ...` (only in the functions that need it): importing the module loads no
    TensorFlow. Each is imported in a process that has not loaded it (modules_importing_tensorflow)."""
    no = sorted(name for name, cell in module_table().items() if re.match(r"(no|when)\b", cell))
    assert "alexnet_core.settings.config" in no and "alexnet_core.cli" in no, no
    wrong = modules_importing_tensorflow(ROOT, no)
    assert not wrong, "docs/ARCHITECTURE.md says importing these loads no TensorFlow:\n" + "\n".join(
        f"{name}: {why}" for name, why in wrong.items())


def test_the_tensorflow_check_catches_an_import(tmp_path):
    """A planted module that imports a (stand-in) TensorFlow is caught, also when imported after
    clean ones; one that fails to import is named; the clean ones pass."""
    root = _plant(tmp_path, {"tensorflow/__init__.py": "", "pkg/__init__.py": "", "pkg/clean.py": "import json\n",
                             "pkg/heavy.py": "def f():\n    pass\nimport pkg.clean, tensorflow\n",
                             "pkg/broken.py": "raise RuntimeError('half-written')\n", "pkg/tidy.py": ""})
    wrong = modules_importing_tensorflow(root, ["pkg.clean", "pkg.heavy", "pkg.broken", "pkg.tidy"])
    assert wrong == {"pkg.heavy": "imports tensorflow",
                     "pkg.broken": "cannot be imported: RuntimeError: half-written"}, wrong


def test_docs_the_code_points_to_exist():
    for path in find_modules(ROOT).values():
        for ref in re.findall(r"docs/[A-Z_]+\.md", path.read_text()):
            assert (ROOT / ref).exists(), f"{path.relative_to(ROOT)} points to {ref}"
        assert "DESIGN.md" not in path.read_text(), path.relative_to(ROOT)


def test_version_is_reported():
    import subprocess
    import sys

    from alexnet_core import __version__

    out = subprocess.run([sys.executable, "-m", "alexnet_core", "--version"], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == f"alexnet_core {__version__}"
