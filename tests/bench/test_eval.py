"""`rerankrt eval` end to end on the synthetic dataset: ONNX Runtime and torch give the same table."""

from __future__ import annotations

import json
import pickle

import pytest

from rerankrt.bench.eval import rankings
from rerankrt.bench.synth import synthesize
from rerankrt.cli import main
from rerankrt.data import read_gnd, read_nn

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("synth"), queries=4, database=60)


@pytest.fixture(scope="module")
def artifacts(perturbed_ames):
    return perturbed_ames


def test_synthetic_dataset_layout(synth):
    data = read_gnd(synth / "gnd_synth.pkl")
    sims, idx = read_nn(synth / "nn_superglobal.pkl", num_db=60)
    assert len(data["gnd"]) == 4 and idx.shape == (4, 60)
    assert all(len(g["easy"]) == 3 and len(g["hard"]) == 3 and len(g["junk"]) == 2 for g in data["gnd"])
    assert (sims[:, :-1] >= sims[:, 1:]).all()  # shortlists sorted by global similarity


def test_eval_ort_and_torch_give_the_same_table(synth, artifacts, tmp_path, capsys):
    common = ["eval", "--data", str(synth), "--dataset", "synth", "--model", "ames", "--shortlist", "20"]
    assert main([*common, "--backend", "ort", "--artifacts", str(artifacts), "--out", str(tmp_path / "ort.json")]) == 0
    ort_table = capsys.readouterr().out
    assert main([*common, "--backend", "torch", "--checkpoint", str(artifacts / "ames.pt"),
                 "--out", str(tmp_path / "torch.json")]) == 0
    torch_table = capsys.readouterr().out
    assert ort_table == torch_table
    assert "synth      ames fp32      reranked     mAP  E " in ort_table
    report = json.loads((tmp_path / "ort.json").read_text())
    table = report["tables"]["ames fp32"]
    assert set(table["reranked"]) == {"easy", "medium", "hard"}
    assert table["reranked"] != table["first_stage"]  # the re-ranker's logits changed the orders
    assert report["settings"]["shortlist"] == 20 and report["settings"]["backend"] == "ort"


def test_medium_and_hard_runs_see_their_own_shortlists(synth):
    from rerankrt.models.torch_backend import TorchBackend

    gnd = read_gnd(synth / "gnd_synth.pkl")["gnd"]
    with TorchBackend("ames") as backend:
        result = rankings(backend, synth, "synth", shortlist=20)
    for q, g in enumerate(gnd):
        medium, hard = result["runs"]["medium"][0][q], result["runs"]["hard"][0][q]
        n_junk = sum(i in set(g["junk"]) for i in medium)
        assert set(medium[-n_junk:]) <= set(g["junk"])  # junk at the end of the Medium run's list
        pushed = set(g["junk"]) | set(g["easy"])
        n_pushed = sum(i in pushed for i in hard)
        assert set(hard[-n_pushed:]) <= pushed  # junk and easy at the end of the Hard run's list


def test_compare_fp32_fp16(synth, capsys):
    assert main(["eval", "--data", str(synth), "--dataset", "synth", "--model", "ames", "--backend", "torch",
                 "--shortlist", "20", "--compare", "fp32,fp16"]) == 0
    out = capsys.readouterr().out
    assert "synth      ames fp16      reranked     mAP" in out
    tau = float(out.split("Kendall tau ")[1].split(",")[0])
    assert 0.5 < tau <= 1.0 and "top-10 overlap" in out


def test_eval_bad_input(synth, tmp_path, capsys):
    assert main(["eval", "--data", str(synth), "--dataset", "holidays", "--model", "ames", "--backend", "torch"]) == 2
    assert "--dataset: expected one of roxford5k, rparis6k, synth, gldv2, got 'holidays'" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in synth.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    data = read_gnd(synth / "gnd_synth.pkl")
    data["gnd"], data["qimlist"] = data["gnd"][:3], data["qimlist"][:3]
    (broken / "gnd_synth.pkl").write_bytes(pickle.dumps(data))
    assert main(["eval", "--data", str(broken), "--dataset", "synth", "--model", "ames", "--backend", "torch",
                 "--shortlist", "20"]) == 2
    assert "gnd_synth.pkl has 3 queries, nn_superglobal.pkl has 4" in capsys.readouterr().err


def test_eval_gldv2_layout(synth, tmp_path, capsys):
    """GLDv2's ground truth lists positives under 'ok'; one run, mAP@100 public/private."""
    gldv2 = tmp_path / "gldv2"
    gldv2.mkdir()
    for f in synth.iterdir():
        (gldv2 / f.name).write_bytes(f.read_bytes())
    data = read_gnd(synth / "gnd_synth.pkl")
    ok = [{"ok": list(g["easy"]) + list(g["hard"])} for g in data["gnd"]]
    (gldv2 / "gnd_gldv2.pkl").write_bytes(pickle.dumps({"gnd": ok, "imlist": data["imlist"],
                                                        "qimlist": data["qimlist"]}))
    assert main(["eval", "--data", str(gldv2), "--dataset", "gldv2", "--model", "ames", "--backend", "torch",
                 "--shortlist", "20"]) == 0
    out = capsys.readouterr().out
    assert "gldv2      ames fp32      reranked     mAP  public nan  private " in out  # 4 queries: all private


def test_plus1m_needs_distractors(synth, capsys):
    assert main(["eval", "--data", str(synth), "--dataset", "synth", "--model", "ames", "--backend", "torch",
                 "--shortlist", "20", "--plus1m"]) == 2
    assert (f"--plus1m: {synth / 'dinov2_gallery_local.hdf5'} holds 60 images, no more than the 60 of the ground "
            f"truth: not a +1M folder") in capsys.readouterr().err


def test_plus1m_with_distractor_rows(tmp_path, capsys):
    """A +1M folder: the gallery file has rows beyond the ground truth's imlist (the R1M part)."""
    root = synthesize(tmp_path / "plus1m", queries=3, database=80)
    data = read_gnd(root / "gnd_synth.pkl")
    data["imlist"] = data["imlist"][:70]  # images 70–79 play the distractors (none is a positive or junk)
    for g in data["gnd"]:
        for k in ("easy", "hard", "junk"):
            g[k] = g[k][g[k] < 70]
    (root / "gnd_synth.pkl").write_bytes(pickle.dumps(data))
    assert main(["eval", "--data", str(root), "--dataset", "synth", "--model", "ames", "--backend", "torch",
                 "--shortlist", "20", "--plus1m"]) == 0
    assert "reranked" in capsys.readouterr().out
