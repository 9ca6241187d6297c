"""The layering rule (pyproject.toml's import-linter contracts) and the torch-free imports it protects."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("models", "export", "engines", "runtime", "bench", "serve", "app")


def test_import_linter_contracts_hold(tmp_path):
    """The sub-packages live in top-level folders mapped into `rerankrt.*` (package-dir), which import-linter
    cannot follow; it reads a tree of links laid out as the installed package instead."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter is not installed (dev extra)")
    package = tmp_path / "rerankrt"
    package.mkdir()
    for source in (ROOT / "rerankrt").glob("*.py"):
        (package / source.name).symlink_to(source)
    for name in SUBPACKAGES:
        (package / name).symlink_to(ROOT / name, target_is_directory=True)
    out = subprocess.run([lint, str(ROOT / "pyproject.toml"), "--no-cache"], cwd=tmp_path, capture_output=True,
                         text=True, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 3 kept, 0 broken." in out.stdout


@pytest.mark.parametrize(("module", "absent"), [
    ("rerankrt", ("torch", "rerankrt.models")),
    ("rerankrt.runtime", ("torch", "rerankrt.models", "rerankrt.export", "rerankrt.bench")),
    ("rerankrt.models", ("torch",)),
    ("rerankrt.cli", ("torch",)),
])
def test_imports_stay_light(module, absent):
    """A device that runs only the runtime loads only the runtime; the registry and the CLI need no torch."""
    code = f"import sys, {module}; print(sorted(m for m in {absent!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
