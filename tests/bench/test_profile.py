"""`rerankrt bench`: a tiny run end to end writing every output; the schema; skipped backends recorded."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest

from rerankrt.bench.profile import SCHEMA, preset_settings, run_bench
from rerankrt.cli import main
from rerankrt.models.cards.ames import AMES, ames_flops
from rerankrt.models.cards.locore import LOCORE, locore_flops
from rerankrt.models.cards.raml import RAML, raml_flops

pytest.importorskip("torch")

CONFIGS = {
    "ames": {"num_layers": 1, "query_descriptors": 20, "db_descriptors": 5},
    "locore": {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64, "attention_window": 8,
               "max_positions": 130, "local_dim": 32, "global_dim": 32, "local_descriptors": 5},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    said: list[str] = []
    results = run_bench(["ames", "locore", "raml"], ["torch", "ort", "trt"], ["fp32", "fp16"], [5, 30], repeat=2,
                        out=out, configs=CONFIGS, log=said.append)
    return out, results, said


def test_every_output_is_written(run):
    out, results, said = run
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "latency_vs_shortlist.png", "results.csv", "results.json", "results.md", "roofline.png"]
    for png in ("latency_vs_shortlist.png", "roofline.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert json.loads((out / "results.json").read_text()) == results
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == len(results["results"])
    table = (out / "results.md").read_text()  # a reduced size is named as such
    assert "| ames (num_layers=1, query_descriptors=20, db_descriptors=5) | torch | fp32 | 5 |" in table
    assert "| raml | torch | fp32 | 5 |" in table
    assert said[0] == "[1/30] ames torch fp32 S=5"  # 3 backends × 2 precisions × (2 + 2 + 1) shortlists


def test_schema_and_cases(run):
    _, results, _ = run
    assert results["schema"] == SCHEMA
    assert set(results) == {"schema", "preset", "settings", "environment", "measured_at", "probes", "results",
                            "skipped"}
    done = {(r["model"], r["backend"], r["precision"], r["shortlist"]) for r in results["results"]}
    ran = {("torch", "fp32"), ("ort", "fp32"), ("ort", "fp16")}  # torch fp16 needs a GPU, trt an engine
    assert done == {(m, b, p, s) for m in ("ames", "locore") for b, p in ran for s in (5, 30)} | {
        ("raml", b, p, 5) for b, p in ran}
    reasons = {s["case"]: s["reason"] for s in results["skipped"]}
    assert reasons["ames torch fp16 S=5"].startswith("torch FP16 on the CPU is an overflow check")
    assert reasons["ames trt fp32 S=5"].startswith("no engine ")
    for row in results["results"]:
        assert row["n"] == 2 and row["median"] > 0 and 0 < row["roofline_fraction"]
        assert set(row) >= {"p90", "p99", "mean", "std", "gflops_per_s", "storage_bytes_per_image", "peak_rss_mb"}
    assert set(results["probes"]) == {"torch fp32", "ort fp32", "ort fp16"}


def test_flops_and_calls_follow_the_workload(run):
    _, results, _ = run
    rows = {(r["model"], r["backend"], r["shortlist"]): r for r in results["results"] if r["precision"] == "fp32"}
    ames = dataclasses.replace(AMES, **CONFIGS["ames"])
    assert rows["ames", "torch", 30]["flops"] == 30 * ames_flops(ames, 20, 5)
    locore = dataclasses.replace(LOCORE, **CONFIGS["locore"])  # window 17 (position table), stride 17
    assert rows["locore", "ort", 30]["calls"] == 2  # starts 13, 0
    assert rows["locore", "ort", 30]["flops"] == 2 * locore_flops(locore, 17)
    assert rows["locore", "ort", 5]["flops"] == locore_flops(locore, 5)
    assert rows["raml", "torch", 5]["flops"] == raml_flops(RAML, 224, 224)
    from rerankrt.bench.profile import STORE_IMAGES

    ames_row = rows["ames", "ort", 5]  # measured on a store: 5 fp16 tokens of 128, a mask byte, the manifest
    assert ames_row["storage_measured"] and ames_row["storage_bytes_per_image"] == pytest.approx(
        5 * 128 * 2 + 1, abs=4096 / STORE_IMAGES)
    assert rows["raml", "ort", 5]["storage_bytes_per_image"] == 512 * 4 and not rows["raml", "ort", 5][
        "storage_measured"]  # the card's formula


def test_presets_and_bad_arguments(capsys):
    quick = preset_settings("quick")
    assert quick["shortlists"] == [100] and quick["backends"] == ["torch", "ort"]
    assert {"ames", "locore-small", "rrt", "r2former", "cvnet-rerank"} <= set(quick["models"])  # the comparison
    from rerankrt.bench.profile import variant

    assert [variant(m, quick["configs"].get(m, {})) for m in quick["models"]] == [
        "ames", "locore-small", "rrt (local_descriptors=100)", "r2former",
        "cvnet-rerank (map_height=12, map_width=16)", "raml"]
    with pytest.raises(ValueError, match="--preset: expected one of quick, paper, edge, got 'huge'"):
        preset_settings("huge")
    assert main(["bench", "--models", "ames,bert"]) == 2
    assert "--models: unknown ['bert']" in capsys.readouterr().err


def test_baselines_and_the_hugging_face_path(tmp_path):
    """R2Former, CVNet-Rerank's head and locore-hf (HF Longformer with LOCORE's weights) in one tiny run."""
    pytest.importorskip("transformers", reason="locore-hf needs transformers (rerankrt[hf], in the dev extra)")
    from rerankrt.models.cards.cvnet import CVNET, CVNET_BACKBONE, cvnet_backbone_flops, cvnet_flops
    from rerankrt.models.cards.r2former import R2FORMER, r2former_flops

    configs = {"r2former": {"tokens": 30}, "locore": CONFIGS["locore"],
               "cvnet-rerank": {"feature_dim": 32, "conv_dim": 16, "map_height": 6, "map_width": 8},
               "cvnet-backbone": {"image_height": 64, "image_width": 96}}
    models = ["r2former", "cvnet-rerank", "cvnet-backbone", "locore", "locore-hf"]
    results = run_bench(models, ["torch", "ort"], ["fp32"], [12],
                        repeat=1, out=tmp_path, configs=configs, log=lambda message: None)
    rows = {(r["model"], r["backend"]): r for r in results["results"]}
    assert set(rows) == {(m, b) for m in models[:4] for b in ("torch", "ort")} | {("locore-hf", "torch")}
    assert results["skipped"] == [{"case": "locore-hf ort fp32 S=12",
                                   "reason": "locore-hf is the Hugging Face PyTorch path: torch backend only"}]
    r2 = dataclasses.replace(R2FORMER, tokens=30)
    cv = dataclasses.replace(CVNET, **configs["cvnet-rerank"])
    assert rows["r2former", "ort"]["flops"] == 12 * r2former_flops(r2, 30, 30) and rows["r2former", "ort"]["calls"] == 1
    assert rows["cvnet-rerank", "torch"]["flops"] == 12 * cvnet_flops(cv, (6, 8), (6, 8))
    assert rows["cvnet-rerank", "torch"]["calls"] == 3  # 4 pairs per call: the profile's opt
    assert rows["r2former", "torch"]["storage_bytes_per_image"] == 30 * 131 * 4
    assert rows["cvnet-rerank", "ort"]["storage_bytes_per_image"] == 32 * 6 * 8 * 4
    backbone = rows["cvnet-backbone", "ort"]
    assert backbone["flops"] == cvnet_backbone_flops(CVNET_BACKBONE, 64, 96) and backbone["calls"] == 1
    assert backbone["storage_bytes_per_image"] == 1024 * 4 * 6 * 4  # the stride-16 maps the head reads
    hf, ours = rows["locore-hf", "torch"], rows["locore", "torch"]
    assert (hf["flops"], hf["calls"], hf["storage_bytes_per_image"]) == (ours["flops"], ours["calls"],
                                                                        ours["storage_bytes_per_image"])
    assert all(r["peak_device_mb"] is None for r in results["results"])  # no GPU here


def test_locore_hf_scores_match_rerankrt():
    """The Hugging Face path and rerankrt's static tiled attention give the same window scores."""
    pytest.importorskip("transformers", reason="locore-hf needs transformers (rerankrt[hf], in the dev extra)")
    import numpy as np

    from rerankrt.bench.locore_hf import HfLocoreBackend
    from rerankrt.errors import InputError
    from rerankrt.models.torch_backend import TorchBackend

    config = {**CONFIGS["locore"], "local_dim": 48, "global_dim": 40}  # both projections present
    with HfLocoreBackend("locore", **config) as hf, TorchBackend("locore", **config) as ours:
        import torch

        with torch.no_grad():  # weights that separate the images well beyond the tolerance
            for backend in (ours.model, hf.hf):
                for p in backend.parameters():
                    p.mul_(3.0)
            hf.classifier = tuple(3.0 * t for t in hf.classifier)
            for name in ("local_to_lm", "global_to_lm"):
                setattr(hf, name, tuple(3.0 * t for t in getattr(hf, name)))
            hf.scale0, hf.sep, hf.pad = 3.0 * hf.scale0, 3.0 * hf.sep, 3.0 * hf.pad
        from rerankrt.models import spec_for

        spec = spec_for("locore", ours.model.config)
        feeds = spec.feeds({"batch": 2, "images": 9}, seed=3)
        a, b = hf.infer(feeds)["scores"], ours.infer(feeds)["scores"]
        feeds["q_local"][0, 0, 0] = np.nan
        with pytest.raises(InputError, match=r"^q_local: contains 1 NaN or infinite values$"):
            hf.infer(feeds)
    assert a.shape == (2, 9) and b.std() > 0.05
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)


def test_progress_bar_on_a_terminal(monkeypatch):
    import io

    from rerankrt.bench import profile

    class Tty(io.StringIO):
        def isatty(self):
            return True

    err = Tty()
    monkeypatch.setattr(profile.sys, "stderr", err)
    profile.progress("ames ort fp32 S=100", 1, 4)
    profile.progress("ames ort fp32 S=100", 4, 4)
    assert err.getvalue() == ("\r  ames ort fp32 S=100 [######..................] 1/4"
                              "\r  ames ort fp32 S=100 [########################] 4/4\n")
    monkeypatch.setattr(profile.sys, "stderr", io.StringIO())  # not a terminal: nothing
    profile.progress("x", 1, 1)
    assert profile.sys.stderr.getvalue() == ""


def test_store_path_beside_the_whole_model(tmp_path):
    """`ames-dist-scorer` is timed as the store path runs: the query through the encoder once, then the
    scorer's batches of stored entries. Far fewer bytes are fed than the whole model's broadcast query, and
    the bytes per image are measured on a store the bench builds."""
    from rerankrt.bench.profile import STORE_IMAGES
    from rerankrt.models.cards.ames import AMES_DIST, encoder_flops, scorer_flops

    small = {"num_layers": 1, "query_descriptors": 20, "db_descriptors": 5}
    results = run_bench(["ames-dist", "ames-dist-scorer"], ["torch", "ort"], ["fp32"], [30], repeat=1,
                        out=tmp_path, configs={"ames-dist": small, "ames-dist-scorer": small}, log=lambda m: None)
    rows = {(r["model"], r["backend"]): r for r in results["results"]}
    assert set(rows) == {(m, b) for m in ("ames-dist", "ames-dist-scorer") for b in ("torch", "ort")}
    cfg = dataclasses.replace(AMES_DIST, **small)
    store = rows["ames-dist-scorer", "ort"]
    assert store["calls"] == 2  # the query's encoding, then 30 pairs in one batch (opt 100)
    assert store["flops"] == encoder_flops(cfg, {"images": 1, "descriptors": 20}) + scorer_flops(
        cfg, {"pairs": 30, "query_descriptors": 20, "db_descriptors": 5})
    whole = rows["ames-dist", "ort"]
    assert whole["bytes_fed"] == 30 * (20 * 768 * 4 + 20 + 5 * 768 * 4 + 5)  # the query repeated per pair
    assert store["bytes_fed"] == (20 * 768 * 4 + 20) + (20 * 128 + 20 + 30 * 5 * 128 + 30 * 5)  # once, then codes
    for row in (store, whole):
        assert row["storage_measured"] is True
        assert row["storage_bytes_per_image"] == pytest.approx(5 * 16 + 1, abs=4096 / STORE_IMAGES)
