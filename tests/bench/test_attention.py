"""bench.attention: every way it times computes the attention it names, and the report's keys."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rerankrt.bench import attention


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_the_timed_ways_compute_the_attention_they_name():
    p, h, s, d = 2, 2, 8, 4
    runs, x = attention.cases({"pairs": p, "heads": h, "rows": s, "keys": 9, "head_dim": d}, np.random.default_rng(0))
    q, k, v = (x[n].astype(np.float64) for n in ("q", "k", "v"))
    scores = q @ k.transpose(0, 1, 3, 2)
    masked = softmax(scores + x["bias"]) @ v
    plain = softmax(scores) @ v
    assert np.abs(masked - plain).max() > 0.1  # the bias masks something

    def per_head(out: np.ndarray) -> np.ndarray:  # [P, S, H·D] → [P, H, S, D]
        return out.reshape(p, s, h, d).transpose(0, 2, 1, 3)

    tol = {"rtol": 1e-5, "atol": 1e-5 * float(np.abs(plain).max())}
    np.testing.assert_allclose(per_head(runs["MultiHeadAttention, padding bias"][0]()), masked, **tol)
    np.testing.assert_allclose(per_head(runs["MultiHeadAttention, no mask"][0]()), plain, **tol)
    np.testing.assert_allclose(runs["q·kᵀ (MatMul)"][0](), scores, rtol=1e-5, atol=1e-5 * float(np.abs(scores).max()))
    np.testing.assert_allclose(runs["softmax (Softmax)"][0](), softmax(x["scores"].astype(np.float64)), rtol=1e-5,
                               atol=1e-7)
    pv = x["scores"].astype(np.float64) @ v
    np.testing.assert_allclose(runs["p·v (MatMul)"][0](), pv, rtol=1e-5, atol=1e-5 * float(np.abs(pv).max()))
    np.testing.assert_allclose(runs["torch SDPA, padding bias"][0](), masked, **tol)


def test_the_report():
    result = attention.measure({"pairs": 2, "heads": 2, "rows": 8, "keys": 9, "head_dim": 4}, repeat=1)
    names = ["MultiHeadAttention, padding bias", "MultiHeadAttention, no mask", "q·kᵀ (MatMul)", "softmax (Softmax)",
             "p·v (MatMul)", "torch SDPA, padding bias"]
    assert list(result["median_ms"]) == names
    assert list(result["gflops_per_s"]) == [n for n in names if n != "softmax (Softmax)"]
    assert attention.shape(100) == {"pairs": 100, "heads": 2, "rows": 600, "keys": 601, "head_dim": 64}


def test_main_prints_and_writes_json(tmp_path, capsys):
    out = tmp_path / "attention.json"
    assert attention.main(["--pairs", "2", "--repeat", "1", "--out", str(out)]) == 0
    assert "MultiHeadAttention, padding bias" in capsys.readouterr().out
    assert json.loads(out.read_text())["shape"] == attention.shape(2)


def test_an_earlier_result_is_replaced_only_with_force(tmp_path, capsys):
    out = tmp_path / "attention.json"
    out.write_text("earlier")
    with pytest.raises(SystemExit) as e:
        attention.main(["--pairs", "2", "--repeat", "1", "--out", str(out)])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"error: --out: {out} exists (pass --force to replace it)")
    assert out.read_text() == "earlier"
    assert attention.main(["--pairs", "2", "--repeat", "1", "--out", str(out), "--force"]) == 0
    assert json.loads(out.read_text())["shape"] == attention.shape(2)
