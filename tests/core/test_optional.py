"""A missing optional dependency ends `rerankrt` with one line that names the extra to install, exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rerankrt.core.errors import UnavailableError
from rerankrt.core.optional import require

#: each hidden module, a command that needs it, what the message names, and the extra
CASES = [
    ("torch", ["export", "ames", "--out", "{tmp}/out"], "needs torch", "export"),
    ("polygraphy", ["validate", "{tmp}/ames.onnx"], "the validation ladder needs polygraphy", "export"),
    ("matplotlib", ["bench", "--models", "ames", "--out", "{tmp}/bench"], "the profiler's plots needs matplotlib",
     "bench"),
    ("tensorrt", ["build", "{tmp}/ames.fp16.onnx"], "building a TensorRT engine needs tensorrt", "trt"),
    ("cuda", ["eval", "--data", "{tmp}", "--dataset", "synth", "--model", "ames", "--engine", "{tmp}/ames.plan"],
     "a TensorRT engine needs cuda-python", "trt"),
    ("tritonclient", ["triton", "--check", "{tmp}/repo"], "Triton model configs needs tritonclient[grpc]", "serve"),
]


@pytest.mark.parametrize(("module", "argv", "says", "extra"), CASES, ids=[c[0] for c in CASES])
def test_missing_extra_is_one_line_and_exit_2(tmp_path, module, argv, says, extra):
    code = (f"import sys; sys.modules[{module!r}] = None\n"  # `import {module}` now raises ImportError
            "from rerankrt.cli import main\n"
            f"sys.exit(main({[a.format(tmp=tmp_path) for a in argv]!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"rerankrt {argv[0]}: error: ") and says in lines[0]
    assert lines[0].endswith(f"; pip install 'rerankrt[{extra}]'")
    assert list(tmp_path.iterdir()) == []  # nothing was started, nothing written


def test_require_names_the_purpose_the_package_and_the_cause():
    with pytest.raises(UnavailableError) as e:
        require("rerankrt_no_such_module.sub", "export", "a test")
    assert str(e.value) == ("a test needs rerankrt_no_such_module, which is not available here (No module named "
                            "'rerankrt_no_such_module'); pip install 'rerankrt[export]'")
    assert require("json", "export", "a test").dumps([1]) == "[1]"
