"""`rerankrt bench`: a tiny run end to end writing every output; the report's structure (comparison
tables with their ratios, encoders apart, the roofline under its probed roofs); interleaved timing; the
schema; skipped backends recorded."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest

from rerankrt.bench.profile import preset_settings, run_bench
from rerankrt.bench.report import SCHEMA
from rerankrt.cli import main
from rerankrt.models.cards.ames import AMES, ames_flops
from rerankrt.models.cards.locore import LOCORE, locore_flops
from rerankrt.models.cards.raml import RAML, raml_flops
from rerankrt.models.cards.rrt import RRT, rrt_flops

pytest.importorskip("torch")

CONFIGS = {
    "ames": {"num_layers": 1, "query_descriptors": 20, "db_descriptors": 5},
    "rrt": {"num_layers": 1, "local_descriptors": 24},
    "locore": {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64, "attention_window": 8,
               "max_positions": 130, "local_dim": 32, "global_dim": 32, "local_descriptors": 5},
}
MODELS = ["ames", "rrt", "locore", "locore-hf", "raml"]
#: how the log and the skipped cases name the reduced AMES
AMES_SMALL = "ames (num_layers=1, query_descriptors=20, db_descriptors=5)"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    pytest.importorskip("transformers", reason="locore-hf needs transformers (rerankrt[hf], in the dev extra)")
    from rerankrt.bench import profile

    out = tmp_path_factory.mktemp("bench")
    said: list[str] = []
    order: list[str] = []  # the order in which the timed queries ran
    timer = profile._timer

    def recording(backend, device):
        time_it = timer(backend, device)
        return lambda fn: order.append(f"{backend.meta['model']} {backend.name} {backend.precision}") or time_it(fn)

    profile._timer = recording
    try:
        results = run_bench(MODELS, ["torch", "ort", "trt"], ["fp32", "fp16"], [5, 30], repeat=2, out=out,
                            configs=CONFIGS, log=said.append, batches=[1, 2])
    finally:
        profile._timer = timer
    return out, results, said, order


def test_every_output_is_written(run):
    out, results, said, _ = run
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "latency.png", "results.csv", "results.json", "results.md", "roofline.png"]
    for png in ("latency.png", "roofline.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert json.loads((out / "results.json").read_text()) == results
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == len(results["results"])
    # 3 backends × 2 precisions × (4 re-rankers × 2 S + 2 batches)
    assert said[0] == f"[1/60] {AMES_SMALL} torch fp32 S=5"


def test_the_report_opens_with_the_comparison(run):
    """One table per shortlist size, re-rankers first and baselines after, with their speed-ups over the
    fastest pair-wise baseline and over the published code path; then the encoders; then the roofline."""
    out, results, _, _ = run
    text = (out / "results.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == ["# rerankrt bench: custom preset on cpu", "## Re-ranking a shortlist of 5",
                        "## Re-ranking a shortlist of 30", "## The deployed graphs side by side",
                        "## Where ONNX Runtime's time goes", "## Encoders", "## Roofline"]
    rows = {(r["model"], r["backend"], r["precision"], r["shortlist"], r["batch"]): r for r in results["results"]}
    ames = rows["ames", "ort", "fp32", 30, None]
    at_30 = text.split("## Re-ranking a shortlist of 30")[1].split("##")[0]
    line = next(line for line in at_30.splitlines() if line.startswith(
        "| ames (num_layers=1, query_descriptors=20, db_descriptors=5) | ort | fp32 |"))
    assert ames["vs_baseline"] is None and "| — | — |" in line  # RRT runs reduced here: never the headline ratio
    deployed = text.split("## The deployed graphs side by side")[1].split("##")[0]
    torch_ames = rows["ames", "torch", "fp32", 30, None]
    assert f"| {ames['label']} | 30 | {torch_ames['median']:.1f}, " in deployed
    assert f"{ames['median']:.1f}, {torch_ames['median'] / ames['median']:.2f}×, " in deployed
    locore, hf = rows["locore", "torch", "fp32", 5, None], rows["locore-hf", "torch", "fp32", 5, None]
    line = next(line for line in text.splitlines() if line.startswith("| locore (") and "| torch | fp32 |" in line)
    assert line.count("×") == 1 and f"| — | {hf['median'] / locore['median']:.2f}× |" in line  # vs its published code
    section = text.split("## Re-ranking a shortlist of 5")[1].split("##")[0]
    assert section.index("| locore (") < section.index("| rrt (") < section.index("(baseline)")
    raml = rows["raml", "ort", "fp32", None, 2]
    encoders = text.split("## Encoders")[1].split("##")[0]
    assert f"| raml | ort | fp32 | 2 | {raml['median']:.1f} | {raml['median'] / 2:.1f} | " \
           f"{2e3 / raml['median']:.1f} |" in encoders


def test_roofline_under_its_probed_roofs(run):
    _, results, _, _ = run
    assert set(results["roofs"]) == {"torch fp32", "ort fp32", "ort fp16"}
    for roof in results["roofs"].values():
        assert roof["compute"]["gflops"] == max(roof["compute"]["kernels"].values()) > 0
        assert {"matmul 1024", "batched matmul 16×512"} <= set(roof["compute"]["kernels"])
        assert roof["memory"]["gb_per_s"] > 0 and roof["memory"]["where"] == "host copy"
    for r in results["results"]:
        roof = results["roofs"][f"{r['backend']} {r['precision']}"]
        assert r["intensity"] == pytest.approx(r["flops"] / r["bytes_moved"])
        assert r["bound_gflops"] == min(roof["compute"]["gflops"], r["intensity"] * roof["memory"]["gb_per_s"])
        # a timed fraction may pass 1 on a loaded machine (flagged, next test): what it is, not a bound, is checked
        assert r["roofline_fraction"] > 0
        assert r["roofline_fraction"] == pytest.approx(r["gflops_per_s"] / r["bound_gflops"], rel=1e-12)
        assert r["above_roof"] == (r["roofline_fraction"] > 1.0)
        assert r["bytes_moved"] > r["bytes_fed"] > 0  # outputs and weights on top of the inputs


def test_a_case_above_its_roof_is_flagged_not_shown_silently(run):
    """The roofs are the best of a probe before the cases and one after; a case still above its roof (a
    loaded probe, a FLOP model counting skipped work) is named in the table and under it."""
    import copy

    from rerankrt.bench.report import markdown

    _, results, _, _ = run
    above = [r for r in results["results"] if r["above_roof"]]  # timed: none on an idle machine, some when loaded
    if above:
        assert "Above the roof: " + ", ".join(f"{r['label']} {r['backend']}" for r in above) in markdown(results)
    edited = copy.deepcopy(results)
    for r in edited["results"]:
        r["above_roof"] = False
    row = edited["results"][0]
    row["roofline_fraction"], row["above_roof"] = 1.16, True
    text = markdown(edited)
    assert "| 116 % (above the roof) |" in text
    assert f"Above the roof: {row['label']} {row['backend']}. A case faster than the best probed kernel" in text


def test_cases_of_a_size_are_timed_interleaved(run):
    """A, B, C, A, B, C: each round times every case of the size once, so drift hits all of them."""
    _, results, _, order = run
    cases_at_5 = sum(1 for r in results["results"] if r["shortlist"] == 5)
    first = order[:cases_at_5]
    assert len(set(first)) == cases_at_5 and order[cases_at_5:2 * cases_at_5] == first


def test_schema_and_cases(run):
    _, results, _, _ = run
    assert results["schema"] == SCHEMA
    assert set(results) == {"schema", "preset", "settings", "environment", "measured_at", "roofs", "results",
                            "skipped"}
    ran = {("torch", "fp32"), ("ort", "fp32"), ("ort", "fp16")}  # torch fp16 needs a GPU, trt an engine
    done = {(r["model"], r["backend"], r["precision"], r["shortlist"], r["batch"]) for r in results["results"]}
    assert done == {(m, b, p, s, None) for m in ("ames", "rrt", "locore") for b, p in ran for s in (5, 30)} | {
        ("locore-hf", "torch", "fp32", s, None) for s in (5, 30)} | {
        ("raml", b, p, None, n) for b, p in ran for n in (1, 2)}
    reasons = {s["case"]: s["reason"] for s in results["skipped"]}
    assert reasons[f"{AMES_SMALL} torch fp16 S=5"].startswith("torch FP16 on the CPU is an overflow check")
    assert reasons[f"{AMES_SMALL} trt fp32 S=5"].startswith("no engine ")
    assert reasons["raml trt fp16 batch=2"].startswith("no engine ")
    for row in results["results"]:
        assert row["n"] == 2 and 0 < row["min"] <= row["median"] <= row["max"]
        if row["backend"] == "ort":  # where ONNX Runtime's time goes, by operator type
            assert row["ops"]["ops"] and 0 < row["ops"]["products"] <= 1 and row["ops"]["total_ms"] > 0
            assert sum(share for _, share in row["ops"]["ops"]) <= 1.0 + 1e-9
        else:
            assert row["ops"] is None
        assert set(row) >= {"p90", "p99", "mean", "std", "gflops_per_s", "storage_bytes_per_image", "peak_rss_mb"}


def test_flops_and_calls_follow_the_workload(run):
    _, results, _, _ = run
    rows = {(r["model"], r["backend"], r["shortlist"] or r["batch"]): r for r in results["results"]
            if r["precision"] == "fp32"}
    ames = dataclasses.replace(AMES, **CONFIGS["ames"])
    assert rows["ames", "torch", 30]["flops"] == 30 * ames_flops(ames, 20, 5)
    assert rows["rrt", "ort", 30]["flops"] == 30 * rrt_flops(dataclasses.replace(RRT, **CONFIGS["rrt"]), 24, 24)
    locore = dataclasses.replace(LOCORE, **CONFIGS["locore"])  # window 17 (position table), stride 17
    assert rows["locore", "ort", 30]["calls"] == 2  # starts 13, 0
    assert rows["locore", "ort", 30]["flops"] == 2 * locore_flops(locore, 17)
    assert rows["locore", "ort", 5]["flops"] == locore_flops(locore, 5)
    assert rows["raml", "torch", 2]["flops"] == 2 * raml_flops(RAML, 224, 224)
    from rerankrt.bench.profile import STORE_IMAGES

    ames_row = rows["ames", "ort", 5]  # measured on a store: 5 fp16 tokens of 128, a mask byte, the manifest
    assert ames_row["storage_measured"] and ames_row["storage_bytes_per_image"] == pytest.approx(
        5 * 128 * 2 + 1, abs=4096 / STORE_IMAGES)
    assert rows["raml", "ort", 1]["storage_bytes_per_image"] == 512 * 4 and not rows["raml", "ort", 1][
        "storage_measured"]  # the card's formula


def test_compare_two_runs(run, tmp_path, capsys):
    out, results, _, _ = run
    slower = json.loads(json.dumps(results))
    for r in slower["results"]:
        r["median"] *= 2
    slower["results"] = slower["results"][1:]  # a case the second run did not measure
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "results.json").write_text(json.dumps(slower))
    assert main(["bench", "--compare", str(out / "results.json"), str(tmp_path / "b" / "results.json")]) == 0
    table = capsys.readouterr().out
    lines = [line for line in table.splitlines() if line.startswith("| ") and "model" not in line]
    assert len(lines) == len(results["results"]) - 1 and all(line.endswith("| 2.00 |") for line in lines)
    assert table.rstrip().endswith("1 case(s) measured by one run only are left out.")
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "rerankrt-bench/1"}))
    assert main(["bench", "--compare", str(out / "results.json"), str(tmp_path / "bad.json")]) == 2
    assert "bad.json: expected schema 'rerankrt-bench/2', got 'rerankrt-bench/1'" in capsys.readouterr().err


def test_presets_and_bad_arguments(capsys):
    quick = preset_settings("quick")
    assert quick["shortlists"] == [25] and quick["backends"] == ["torch", "ort", "ort-fused"]
    assert quick["precisions"] == ["fp32", "int8"]  # every deployed form side by side
    assert {"ames", "locore-small", "rrt", "r2former", "cvnet-rerank"} <= set(quick["models"])  # the comparison
    from rerankrt.bench.profile import scaled_repeat, variant

    assert [variant(m, quick["configs"].get(m, {})) for m in quick["models"]] == [
        "ames", "ames-scorer", "locore-small", "rrt (local_descriptors=100)", "r2former",
        "cvnet-rerank (map_height=12, map_width=16)", "raml"]
    assert quick["repeat"] == 3 and quick["sized_for_gflops"] == 200

    def roofs(*gflops):
        return {f"backend{i}": {"compute": {"gflops": g}} for i, g in enumerate(gflops)}

    # the best roof decides, rounded, clamped to 1 … repeat; unscaled without a sizing or a roof
    assert [scaled_repeat(3, roofs(g, 20), 400) for g in (185, 250, 394, 800, 10)] == [1, 2, 3, 3, 1]
    assert scaled_repeat(3, roofs(185), None) == 3 and scaled_repeat(3, {}, 400) == 3
    with pytest.raises(ValueError, match="preset: expected one of quick, paper, edge, got 'huge'"):
        preset_settings("huge")
    edge = preset_settings("edge", shortlists=[7], models=[], repeat=None)  # empty and None: the preset's own
    assert edge == {**preset_settings("edge"), "shortlists": [7]} and edge["models"] == ["ames", "locore-small", "raml"]
    with pytest.raises(TypeError, match="preset_settings: not a setting of a preset: shortlist"):
        preset_settings("edge", shortlist=[7])
    assert main(["bench", "--models", "ames,bert"]) == 2
    assert "--models: unknown ['bert']" in capsys.readouterr().err
    assert main(["bench", "--models", "ames", "--backends", "onnx"]) == 2
    assert "--backends: expected some of torch, ort, ort-fused, trt, got onnx" in capsys.readouterr().err


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
    assert rows["cvnet-backbone", "ort"]["batch"] == 1 and rows["cvnet-backbone", "ort"]["shortlist"] is None
    assert set(rows) == {(m, b) for m in models[:4] for b in ("torch", "ort")} | {("locore-hf", "torch")}
    hf_small = "locore-hf (" + ", ".join(f"{k}={v}" for k, v in CONFIGS["locore"].items()) + ")"
    assert results["skipped"] == [{"case": f"{hf_small} ort fp32 S=12",
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
    from rerankrt.core.errors import InputError
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

    from rerankrt.core import progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    err = Tty()
    monkeypatch.setattr(progress.sys, "stderr", err)
    progress.progress("ames ort fp32 S=100", 1, 4)
    progress.progress("ames ort fp32 S=100", 4, 4)
    assert err.getvalue() == ("\r  ames ort fp32 S=100 [######..................] 1/4"
                              "\r  ames ort fp32 S=100 [########################] 4/4\n")
    monkeypatch.setattr(progress.sys, "stderr", io.StringIO())  # not a terminal: nothing
    progress.progress("x", 1, 1)
    assert progress.sys.stderr.getvalue() == ""


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


def test_extractor_at_two_sizes_from_its_files(tmp_path, capsys):
    """The extractor profiled in two configurations (a list in `configs`) from a checkpoint and detector:
    an image batch at each size's profile opt, torch's counted FLOPs, the graphs exported in folders of
    their own; the CLI's weight flags take one model."""
    import torch

    from rerankrt.models import load_model
    from rerankrt.models.cards.dinov2 import DINOV2, extractor_flops

    tiny = {"embed_dim": 32, "depth": 1, "num_heads": 2, "mlp_dim": 64}
    sd = load_model("dinov2-extractor", **tiny).state_dict()
    torch.save({k: v for k, v in sd.items() if not k.startswith("detector.")}, tmp_path / "backbone.pth")
    torch.save({"state": {k.removeprefix("detector."): v for k, v in sd.items() if k.startswith("detector.")}},
               tmp_path / "detector.pt")
    files = {"dinov2-extractor": {"checkpoint": str(tmp_path / "backbone.pth"),
                                  "detector": str(tmp_path / "detector.pt")}}
    configs = {"dinov2-extractor": [{**tiny, "imsize": 28}, {**tiny, "imsize": 56}]}
    results = run_bench(["dinov2-extractor"], ["torch", "ort"], ["fp32"], [], repeat=1, out=tmp_path / "run",
                        configs=configs, batches=[1, 2], files=files, log=lambda m: None)
    rows = {(r["label"].split("imsize=")[1][:2], r["backend"], r["batch"]): r for r in results["results"]}
    assert set(rows) == {(s, b, n) for s in ("28", "56") for b in ("torch", "ort") for n in (1, 2)}
    for (side, _, batch), row in rows.items():
        cfg = dataclasses.replace(DINOV2, **tiny)
        assert row["flops"] == extractor_flops(cfg, int(side), int(side), batch) and row["calls"] == 1
        assert row["kind"] == "extractor" and row["shortlist"] is None
    assert len(list((tmp_path / "run" / "artifacts" / "variants").iterdir())) == 2  # one graph per size
    assert "dinov2-extractor (embed_dim=32, depth=1, num_heads=2, mlp_dim=64, imsize=56)" in (
        tmp_path / "run" / "results.md").read_text()
    assert main(["bench", "--models", "ames,raml", "--checkpoint", "x.pt"]) == 2
    assert capsys.readouterr().err.strip() == ("rerankrt bench: error: --checkpoint: the weights of one model; "
                                               "pass --models with one of ames, raml")
    assert main(["bench", "--models", "ames", "--checkpoint", "x.pt", "--detector", "d.pt"]) == 2
    assert capsys.readouterr().err.strip() == ("rerankrt bench: error: --detector: ames has no detector "
                                               "(only dinov2-extractor takes one)")


def test_repeats_scaled_by_the_probed_roof(tmp_path):
    """A preset sized for a faster machine times fewer rounds here, records what it scaled and says so in the
    report (no machine reaches 1e9 GFLOP/s: one round of the preset's 2)."""
    small = {"num_layers": 1, "query_descriptors": 20, "db_descriptors": 5}
    logged: list[str] = []
    results = run_bench(["ames"], ["ort"], ["fp32"], [8], repeat=2, out=tmp_path, configs={"ames": small},
                        log=logged.append, sized_for_gflops=1e9)
    [row] = results["results"]
    sizing = results["settings"]["sizing"]
    assert row["n"] == 1 and results["settings"]["repeat"] == 1
    assert sizing["repeat"] == 2 and sizing["sized_for_gflops"] == 1e9
    # the roof the scaling was decided on: probed before the first cases, at most the run's best of both probes
    assert 0 < sizing["roof_gflops"] <= max(r["compute"]["gflops"] for r in results["roofs"].values())
    assert f"timing 1 rounds instead of 2: the best compute roof here is {sizing['roof_gflops']:.0f} GFLOP/s, the " \
           f"preset is sized for 1000000000" in logged
    report = (tmp_path / "results.md").read_text()
    assert "Medians over 1 repeats" in report and (
        f"The repeats are scaled from the preset's 2: this machine's best compute roof is "
        f"{sizing['roof_gflops']:.0f} GFLOP/s, the preset is sized for 1000000000.") in report
    assert json.loads((tmp_path / "results.json").read_text())["settings"]["sizing"] == sizing


def test_run_settings_change_the_workload_not_the_graph(tmp_path, capsys):
    """A loop's run settings by name (`--setting`): AMES's pair batch and database descriptors shape the calls
    and FLOPs on both backends from the same graph, and the tables name them; names no loop takes, a model
    not profiled and a setting with a flag of its own are refused."""
    from rerankrt.bench.profile import check_settings, settings_by_model

    small = {"num_layers": 1, "query_descriptors": 20, "db_descriptors": 5}
    results = run_bench(["ames"], ["torch", "ort"], ["fp32"], [10], repeat=1, out=tmp_path, configs={"ames": small},
                        log=lambda m: None, settings={"ames": {"batch": 4, "db_descriptors": 3}})
    cfg = dataclasses.replace(AMES, **small)
    for row in results["results"]:
        assert row["label"] == "ames (num_layers=1, query_descriptors=20, db_descriptors=3, batch=4)"
        assert row["calls"] == 3 and row["flops"] == 10 * ames_flops(cfg, 20, 3)  # pairs 4, 4, 2
        assert row["bytes_fed"] == 10 * (20 * 768 * 4 + 20 + 3 * 768 * 4 + 3)
    assert results["settings"]["run_settings"] == {"ames": {"batch": 4, "db_descriptors": 3}}
    [graph] = (tmp_path / "artifacts" / "variants").glob("*/ames.json")  # the settings are not the graph's
    assert json.loads(graph.read_text())["config"]["db_descriptors"] == 5

    assert settings_by_model(["ames", "locore-small", "rrt"], {"window": 50, "batch": 8}) == {
        "locore-small": {"window": 50}, "ames": {"batch": 8}}
    with pytest.raises(ValueError, match=r"^setting: window: no loop of the models profiled takes it \(ames, rrt\)$"):
        settings_by_model(["ames", "rrt"], {"window": 50})
    with pytest.raises(ValueError, match=r"^setting: window: not a run setting of ames \(its settings: shortlist, "
                                         r"lam, gamma, db_descriptors, batch\)$"):
        check_settings(["ames"], {"ames": {"window": 50}})
    with pytest.raises(ValueError, match=r"^setting: batch: not a run setting of rrt \(no loop runs it\)$"):
        check_settings(["rrt"], {"rrt": {"batch": 2}})
    with pytest.raises(ValueError, match=r"^setting: locore is not profiled here \(`models`: ames\)$"):
        check_settings(["ames"], {"locore": {"window": 50}})
    for argv, message in ((["--setting", "window=50"], "--setting: window: no loop of the models profiled takes it"),
                          (["--setting", "shortlist=50"], "--setting shortlist: set by --shortlist, not --setting")):
        assert main(["bench", "--models", "ames", "--out", str(tmp_path / "cli"), *argv]) == 2
        assert message in capsys.readouterr().err


def test_a_reduced_baseline_is_never_the_headline_ratio():
    from rerankrt.bench.report import add_ratios

    def row(model, median, baseline=False, reduced=False):
        return {"model": model, "median": median, "baseline": baseline, "reduced": reduced, "kind": "pair-wise",
                "backend": "ort", "precision": "fp32", "shortlist": 25}

    rows = [row("ames", 100.0), row("rrt", 20.0, baseline=True, reduced=True), row("r2former", 300.0, baseline=True)]
    add_ratios(rows)
    assert rows[0]["vs_baseline"] == pytest.approx(3.0)  # R2Former at its published size, not RRT at 100 locals
    add_ratios(rows[:2])
    assert rows[0]["vs_baseline"] is None
