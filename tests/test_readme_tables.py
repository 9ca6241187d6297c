"""The README's measured tables are written from the profiler's output kept in measured/, not by hand."""

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
    text = (ROOT / "README.md").read_text()
    assert {m.group(2) for m in tables.BLOCK.finditer(text)} == set(tables.RENDERERS)  # every kind is used


def test_a_hand_edited_table_is_stale(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text().replace("| ames | ort |", "| ames | ort | 1 |", 1))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_tables.py"), str(readme), "--check"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 1 and out.stdout.startswith("stale table: comparison measured/quick-cpu.json")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_tables.py"), str(readme)], check=True)
    assert readme.read_text() == (ROOT / "README.md").read_text()
