"""The layering rule (pyproject.toml's import-linter contracts) and the torch-free imports it protects."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter is not installed (dev extra)")
    out = subprocess.run([lint, "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT, capture_output=True,
                         text=True, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 3 kept, 0 broken." in out.stdout


def test_readme_names_the_layers_of_the_contract():
    """The README's layer paragraph lists pyproject's layers contract, top to bottom."""
    contract = next(c for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
                    if c["type"] == "layers")
    readme = (ROOT / "README.md").read_text()
    paragraph = readme[readme.index("**Layers.**"):].split("\n\n", 1)[0]
    assert re.findall(r"`(rerankrt\.\w+)` >", paragraph) + re.findall(r"> `(rerankrt\.\w+)`:", paragraph) == \
        contract["layers"]


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


def test_a_command_is_a_small_module():
    """The CLI is one module per command group, each parse → one library call → print: none over 250 lines."""
    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "src" / "rerankrt" / "cli").glob("*.py")}
    assert {"main.py", "args.py", "export.py", "datasets.py", "search.py", "bench.py", "serve.py"} <= set(sizes)
    assert max(sizes.values()) <= 250, sizes
