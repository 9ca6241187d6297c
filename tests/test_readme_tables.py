"""The documentation's measured tables are written from the profiler's output kept in measured/, not by hand."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "scripts" / "readme_tables.py")
assert _spec and _spec.loader
tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tables)


def test_the_readme_tables_match_their_data():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_tables.py"), "--check"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    kinds = {m.group(2) for path in tables.documents() for m in tables.BLOCK.finditer(path.read_text())}
    assert kinds == set(tables.RENDERERS)  # every kind is used


def test_a_hand_edited_table_is_stale(tmp_path):
    page = tmp_path / "performance.md"
    original = (ROOT / "docs" / "performance.md").read_text()
    first = next(tables.BLOCK.finditer(original))
    edited = first.group(0).replace(" |\n", " | 1 |\n", 1)  # a cell typed into the block's first table row
    page.write_text(original.replace(first.group(0), edited, 1))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_tables.py"), str(page), "--check"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 1
    assert out.stdout == f"stale table: {first.group(2)} {first.group(3)} in performance.md\n"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_tables.py"), str(page)], check=True)
    assert page.read_text() == original
