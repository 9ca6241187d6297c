"""The GPU check script refuses clearly where there is no GPU (on a GPU machine it is run by hand)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rerankrt.core import environment


@pytest.mark.skipif(environment.cuda_device() is not None, reason="a CUDA device is present: run the script itself")
def test_gpu_check_without_a_gpu(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rerankrt.bench.gpu_check", "--out", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "gpu_check: no CUDA device here; run it on a GPU machine"
    assert list(tmp_path.iterdir()) == []
