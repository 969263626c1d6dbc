"""The layout rules of docs/architecture.md, checked on the source: which package may import which,
what `space` keeps out, and the size of modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "common": set(),
    "space": {"common"},
    "train": {"common"},
    "latency": {"common", "space"},
    "export": {"common", "space", "train"},
    "search": {"common", "space", "train", "latency"},
    "netadapt": {"common", "space", "train", "latency", "export"},
}
MAX_LINES = 400


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_packages_import_only_what_the_layout_allows():
    bad = []
    for package, allowed in ALLOWED.items():
        assert _modules(package), f"package {package} has no modules"
        for path in _modules(package):
            ours = (_imports(path) & set(ALLOWED)) - {package}
            bad += [f"{path.relative_to(ROOT)} imports {m}" for m in sorted(ours - allowed)]
    assert not bad, "; ".join(bad)


def test_space_keeps_ray_and_onnxruntime_out_and_imports_without_torch():
    heavy = [f"{p.relative_to(ROOT)}: {m}" for p in _modules("space") for m in _imports(p) & {"ray", "onnxruntime"}]
    assert not heavy, heavy
    code = "import sys, space, space.searchspace, space.references, space.cost; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_long_modules_say_why():
    long = []
    for package in ALLOWED:
        for path in _modules(package):
            text = path.read_text()
            doc = ast.get_docstring(ast.parse(text)) or ""
            if text.count("\n") > MAX_LINES and "long because" not in doc:
                long.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert not long, f"over {MAX_LINES} lines without a reason in the docstring: {long}"
