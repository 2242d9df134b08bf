"""The README's promises: exactly two commands for a fresh machine, and CI runs the second."""

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


def _imports(path: Path) -> set[str]:
    import ast

    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_layers_import_only_downwards():
    """docs/ARCHITECTURE.md: the core never imports Streamlit or the pages; no page imports another."""
    for path in (ROOT / "alexnet_core").glob("*.py"):
        bad = {n for n in _imports(path) if n.split(".")[0] in ("streamlit", "pages")}
        assert not bad, f"{path.name} imports {bad}"
    for path in (ROOT / "pages").glob("*.py"):
        others = {n for n in _imports(path) if n.startswith("pages.") and n != "alexnet_ui.common"}
        assert not others, f"{path.name} imports {others}"


def test_docs_the_code_points_to_exist():
    for path in [*(ROOT / "alexnet_core").glob("*.py"), *(ROOT / "pages").glob("*.py")]:
        for ref in re.findall(r"docs/[A-Z_]+\.md", path.read_text()):
            assert (ROOT / ref).exists(), f"{path.name} points to {ref}"
        assert "DESIGN.md" not in path.read_text(), path.name


def test_version_is_reported():
    import subprocess
    import sys

    from alexnet_core import __version__

    out = subprocess.run([sys.executable, "-m", "alexnet_core", "--version"], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == f"alexnet_core {__version__}"
