"""DESIGN.md §2: dependency direction. forecasting/ must stay usable without Dash."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "forecasting": {
        "dash",
        "dash_bootstrap_components",
        "dash_ag_grid",
        "flask",
        "app",
        "components",
        "callbacks",
    },
    "components": {"app", "callbacks"},
    "app": {"callbacks"},
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


# The app factory (composition root) registers the callbacks: the one allowed app → callbacks import.
EXEMPT = {("app", "app/__init__.py", "callbacks")}


def test_import_direction():
    offenders = []
    for package, banned in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            bad = {b for b in imported_roots(path) & banned if (package, rel, b) not in EXEMPT}
            if bad:
                offenders.append(f"{rel} imports {sorted(bad)}")
    assert offenders == []


def test_forecasting_imports_without_dash_or_boto3():
    code = (
        "import sys, pkgutil, importlib, forecasting\n"
        "for m in pkgutil.walk_packages(forecasting.__path__, 'forecasting.'):\n"
        "    if m.name.split('.')[-1] in ('__main__', 's3', 'athena'):\n"
        "        continue\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in ('dash', 'flask', 'boto3') if m in sys.modules]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
