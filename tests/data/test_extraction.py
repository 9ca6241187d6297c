"""`rerankrt extract`: OpenCV reading and §4's preprocessing against a literal reading, the official files
through ONNX Runtime and torch, query crops, RAML's vectors beside them, and every bad input."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_EXTRACTOR
from fault_cases import KILLER, snapshot
from weights import RAML_META

from rerankrt.cli import main
from rerankrt.core.atomic import SUFFIX
from rerankrt.core.errors import InputError
from rerankrt.data.descriptors import LocalDescriptorFile, read_global
from rerankrt.models.cards.dinov2 import DINOV2

cv2 = pytest.importorskip("cv2", reason="OpenCV (images extra) is not installed")
pytest.importorskip("torch")

from rerankrt.data import extraction  # noqa: E402  (imports cv2 lazily; skipped above without it)
from rerankrt.data.extraction import image_list, output_paths, preprocess, read_image, select  # noqa: E402

TINY = TINY_EXTRACTOR
CONFIG = {"patch_size": 14, "mean": DINOV2.mean, "std": DINOV2.std, "embed_dim": 64}


def published(image: np.ndarray, imsize: int, bbx=None) -> np.ndarray:
    """§4 as the published code runs it: BGR-ordered mean/std, then channels reversed."""
    s = imsize / max(image.shape[:2])
    if bbx is not None:
        image = image[int(bbx[1]):int(bbx[3]), int(bbx[0]):int(bbx[2])]
    f = []
    for side in (image.shape[1], image.shape[0]):
        n = max(round(side * s / 14), 1)
        f.append(s / ((side * s / 14) / n))
    if f != [1, 1]:
        image = cv2.resize(image, (0, 0), fx=f[0], fy=f[1],
                           interpolation=cv2.INTER_AREA if min(f) < 1 else cv2.INTER_LINEAR)
    x = image.astype(np.float32) / 255.0
    x = (x - np.array([0.406, 0.456, 0.485], np.float32)) / np.array([0.225, 0.224, 0.229], np.float32)
    return x.transpose(2, 0, 1)[::-1]


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth BGR image with detail (what INTER_AREA and INTER_LINEAR treat differently)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([np.sin(x / 7 + c) * np.cos(y / 11 - c) for c in range(3)], axis=-1) * 100 + 128
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("height", "width", "imsize", "expected"), [
    (300, 400, 224, (168, 224)),  # shrink: INTER_AREA
    (100, 150, 770, (518, 770)),  # grow: INTER_LINEAR
    (257, 131, 224, (224, 112)),  # both axes off the patch grid
    (1, 1, 770, (770, 770)),  # one pixel: the longer side is scaled to imsize
    (2, 3000, 770, (14, 770)),  # a panorama's short side, 0.5 px after scaling: one patch, as published
])
def test_preprocess_is_the_published_one(height, width, imsize, expected):
    image = photo(height, width)
    ours = preprocess(image, imsize, CONFIG)
    assert ours.pixels.shape == (3, *expected) and ours.pixels.dtype == np.float32
    assert ours.full == (height, width) and ours.crop == (0, 0, height, width)
    np.testing.assert_allclose(ours.pixels, published(image, imsize), rtol=1e-6, atol=1e-6 * 2.7)


def test_query_crop_takes_the_scale_of_the_full_image():
    """400 × 600 cropped to 200 × 200: s = 770 / 600 from the full image, so 18 patches a side (252 px),
    not the 55 the crop alone would get."""
    image, bbx = photo(400, 600), (100.7, 50.2, 300.9, 250.0)
    ours = preprocess(image, 770, CONFIG, bbx)
    assert ours.pixels.shape == (3, 252, 252) and ours.crop == (50, 100, 200, 200) and ours.full == (400, 600)
    np.testing.assert_allclose(ours.pixels, published(image, 770, bbx), rtol=1e-6, atol=1e-6 * 2.7)
    rows = select(np.arange(324, dtype=np.float32), np.ones((324, 64), np.float32), (18, 18), 400, ours)
    kept = rows[:324]  # locations in full-image coordinates, inside the box
    assert (kept[:, 0] > 50 / 400).all() and (kept[:, 0] < 250 / 400).all()
    assert (kept[:, 1] > 100 / 600).all() and (kept[:, 1] < 300 / 600).all()
    assert kept[0, :2].tolist() == pytest.approx([(50 + (14 * 17 + 7) / 252 * 200) / 400,
                                                  (100 + (14 * 17 + 7) / 252 * 200) / 600])


def test_a_box_smaller_than_a_patch_gets_one():
    image, bbx = photo(1000, 1000), (500, 500, 503, 502)  # 2 × 3 px at s = 0.77: one 14 × 14 patch
    ours = preprocess(image, 770, CONFIG, bbx)
    assert ours.pixels.shape == (3, 14, 14)
    np.testing.assert_allclose(ours.pixels, published(image, 770, bbx), rtol=1e-6, atol=1e-6 * 2.7)


@pytest.mark.parametrize(("bbx", "message"), [
    ((100, 50, 700, 250), r"q.jpg: bbx \[100, 50, 700, 250\] is outside its 600 × 400 image \(x0 y0 x1 y1\)"),
    ((-1, 0, 10, 10), r"bbx \[-1, 0, 10, 10\] is outside"),
    ((10, 10, 10, 20), r"bbx \[10, 10, 10, 20\] is outside"),
])
def test_bbx_outside_the_image(bbx, message):
    with pytest.raises(InputError, match=message):
        preprocess(photo(400, 600), 770, CONFIG, bbx, name="q.jpg")


def test_selection_is_stable_and_pads_with_masked_rows():
    prepared = preprocess(photo(28, 42), 42, CONFIG)  # 2 × 3 patches, no resize
    weights = np.array([0.5, 2.0, 0.5, 1.0, 2.0, 0.1], np.float32)
    tokens = np.arange(6 * 64, dtype=np.float32).reshape(6, 64)
    rows = select(weights, tokens, (2, 3), 8, prepared)
    assert rows.shape == (8, 69)
    order = [1, 4, 3, 0, 2, 5]  # descending, ties in token order
    np.testing.assert_array_equal(rows[:6, 4], weights[order])
    np.testing.assert_array_equal(rows[:6, 5:], tokens[order])
    np.testing.assert_array_equal(rows[:6, 2:4], 0)
    np.testing.assert_array_equal(rows[6:, 3], 1)
    assert not rows[6:, [0, 1, 2, 4]].any() and not rows[6:, 5:].any()
    np.testing.assert_allclose(rows[:6, 0], [(14 * (i // 3) + 7) / 28 for i in order], rtol=1e-6)
    np.testing.assert_allclose(rows[:6, 1], [(14 * (i % 3) + 7) / 42 for i in order], rtol=1e-6)
    assert select(weights, tokens, (2, 3), 4, prepared)[:, 4].tolist() == [2.0, 2.0, 1.0, 0.5]


# --- reading images ----------------------------------------------------------------------------------

def test_grayscale_and_rgba_files_read_as_bgr(tmp_path):
    gray = photo(30, 40)[:, :, 0]
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png"), np.stack([gray] * 3, axis=-1))
    bgra = np.dstack([photo(30, 40), np.full((30, 40), 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), bgra[:, :, :3])


def _jpeg(tmp_path, name="a.jpg", seed=0):
    path = tmp_path / name
    cv2.imwrite(str(path), photo(60, 80, seed))
    return path


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p.write_bytes(b""), "the file is empty (0 bytes)"),
    (lambda p: p.write_bytes(_jpeg(p.parent, "src.jpg").read_bytes()[:-300]),
     "a truncated JPEG (it ends inside its image data)"),
    (lambda p: p.write_bytes(cv2.imencode(".png", photo(60, 80))[1].tobytes()[:-100]),
     r"OpenCV cannot read it (truncated, corrupt or not an image)"),
    (lambda p: p.write_text("not an image"), r"OpenCV cannot read it (truncated, corrupt or not an image)"),
    (lambda p: None, "cannot read it (No such file or directory)"),
])
def test_unreadable_images_are_named(tmp_path, make, message):
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(InputError) as e:
        read_image(path)
    assert str(e.value) == f"image {path}: {message}"


def test_a_jpeg_with_bytes_after_its_end_marker_reads(tmp_path):
    path = _jpeg(tmp_path)
    expected = read_image(path)
    path.write_bytes(path.read_bytes() + b"\x00" * 64)  # what some cameras append
    np.testing.assert_array_equal(read_image(path), expected)


def test_image_lists(tmp_path):
    for name in ("b.jpg", "a.PNG", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert image_list(tmp_path) == [tmp_path / "a.PNG", tmp_path / "b.jpg"]  # sorted, images only
    (tmp_path / "list.txt").write_text("b.jpg\n\n/abs/z.jpg\na.PNG\n")
    assert image_list(tmp_path / "list.txt") == [tmp_path / "b.jpg", Path("/abs/z.jpg"), tmp_path / "a.PNG"]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(InputError, match=r"images: the list .*empty.txt is empty"):
        image_list(tmp_path / "empty.txt")
    with pytest.raises(InputError, match=r"images: .*nothing: no such folder or list file"):
        image_list(tmp_path / "nothing")
    (tmp_path / "sub").mkdir()
    with pytest.raises(InputError, match=r"images: .*sub holds no image files \(.jpg, .jpeg"):
        image_list(tmp_path / "sub")


# --- extraction end to end ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def artifacts(tiny_extractor):
    """The extractor at a CI size, exported once (FP32) with a profile of 14…406 px a side (conftest)."""
    return tiny_extractor


@pytest.fixture
def folder(tmp_path):
    """Five images in three sizes: two buckets of two, one alone."""
    images = tmp_path / "images"
    images.mkdir()
    for i, (h, w) in enumerate([(120, 90), (90, 120), (120, 90), (64, 64), (90, 120)]):
        cv2.imwrite(str(images / f"im{i}.png"), photo(h, w, seed=i))
    return images


def _read(out, split, dim=64):
    """The three files as arrays: rows [N, topk, 5 + dim], global [N, dim], cls [N, dim]."""
    import h5py

    paths = output_paths(out, split)
    LocalDescriptorFile(paths["local"], dim=dim).close()  # what the re-rankers' reader accepts
    with h5py.File(paths["local"], "r") as f:
        rows = f["features"][:]
    return rows, np.array(read_global(paths["global"], dim)), np.array(read_global(paths["cls"], dim))


def test_cli_extracts_the_official_files_through_onnx_runtime(artifacts, folder, tmp_path):
    from rerankrt.models import TorchBackend
    from rerankrt.runtime.request import open_backend

    data = tmp_path / "data"
    args = ["extract", "--images", str(folder), "--split", "gallery", "--out", str(data), "--backend", "ort",
            "--artifacts", str(artifacts), "--imsize", "112", "--topk", "50", "--batch", "2"]
    assert main(args) == 0
    assert sorted(p.name for p in data.iterdir()) == ["dinov2_cls_gallery_global.pt", "dinov2_gallery_global.pt",
                                                      "dinov2_gallery_images.json", "dinov2_gallery_local.hdf5"]
    record = json.loads((data / "dinov2_gallery_images.json").read_text())
    assert record == {"format": "rerankrt-extraction/1", "split": "gallery",
                      "images": [f"im{i}.png" for i in range(5)],
                      "extractor": {"model": "dinov2-extractor", "checkpoint_sha256": None, "parts": {},
                                    "imsize": 112, "topk": 50, "precision": "fp32"}, "raml": None}
    rows, global_, cls = _read(data, "gallery")
    assert rows.shape == (5, 50, 69) and global_.shape == cls.shape == (5, 64)
    np.testing.assert_allclose(np.linalg.norm(global_, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(cls, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(rows[:, :, 5:], axis=2)[rows[:, :, 3] == 0], 1, rtol=1e-5)
    kept = [int((r[:, 3] == 0).sum()) for r in rows]
    assert kept == [48, 48, 48, 50, 48]  # 112 × 84 px: 8 × 6 tokens, all kept; 112 × 112: 64, the top 50
    assert all((np.diff(r[:k, 4]) <= 0).all() for r, k in zip(rows, kept, strict=True))

    # the same files through the PyTorch model of the same export, one image a call
    (tmp_path / "torch").mkdir()
    with TorchBackend(str(artifacts / "dinov2-extractor.onnx")) as torch_backend:
        paths = extraction.extract(torch_backend, image_list(folder), tmp_path / "torch", "gallery", 112, 50,
                                   batch=1)
    assert list(paths) == ["local", "global", "cls", "images"]
    rows_t, global_t, cls_t = _read(tmp_path / "torch", "gallery")
    np.testing.assert_allclose(rows, rows_t, rtol=1e-4, atol=1e-4 * np.abs(rows_t).max())
    np.testing.assert_allclose(global_, global_t, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cls, cls_t, rtol=1e-4, atol=1e-5)
    (tmp_path / "big").mkdir()
    with open_backend(artifacts / "dinov2-extractor.onnx", backend="ort", log=lambda m: None) as ort_backend:
        with pytest.raises(InputError, match=r"images of 518 × 392 px: height 518 is outside the extractor's "
                                             r"profile 14…406 \(`imsize`, or export and build with `profile` "
                                             r"height:…\)"):
            extraction.extract(ort_backend, image_list(folder), tmp_path / "big", "gallery", 518, 40)
    assert list((tmp_path / "big").iterdir()) == []


@pytest.fixture(scope="module")
def release_like(tmp_path_factory):
    """The small extractor with release-like weights (tests/weights.py) as its two released files, exported
    from them at the default profiles (14 … 1022 px a side) in both precisions: (folder, model)."""
    from weights import release_like_extractor, save_extractor

    from rerankrt.export.onnx_export import export_model
    from rerankrt.models import load_model

    out = tmp_path_factory.mktemp("release-like")
    model = release_like_extractor(load_model("dinov2-extractor", **TINY))
    backbone, detector = save_extractor(model, out)
    export_model("dinov2-extractor", backbone, out_dir=out, detector=detector, **TINY)
    return out, model


def test_the_ladder_passes_with_release_like_weights(release_like):
    """Detector weights of ~100 beside unit-scale tokens: each output is held to its own scale (an absolute
    1e-4 failed on `weights` here at 1.01e-4, the FP16 check at 0.104 against 0.05)."""
    import torch

    from rerankrt.export.validate import validate

    out, model = release_like
    with torch.no_grad():
        weights = model(torch.randn(1, 3, 37 * 14, 37 * 14, generator=torch.Generator().manual_seed(0)))[0]
    assert float(weights.max()) > 50  # the scale a fixed tolerance cannot cover
    report = validate(out / "dinov2-extractor.onnx")
    assert report.ok and all(c.status == "pass" for c in report.checks), report.table()
    compared = {c.name: c.detail for c in report.checks if c.name.startswith(("(b)", "(c)"))}
    assert set(compared) == {"(b) ONNX Runtime FP32 vs PyTorch FP32", "(b) ONNX Runtime fused FP32 vs PyTorch FP32",
                             "(c) FP16 graph vs FP32 graph (ONNX Runtime)"}
    assert all("of the output's scale" in d for d in compared.values())


def test_onnx_runtime_equals_the_published_extraction_at_770_px(release_like, tmp_path):
    """A 600 × 450 query at 770 px: a 55 × 41 patch grid, the trained 37 × 37 position grid enlarged.
    `extract --backend ort` against §4 and §5 as published: OpenCV preprocessing, Hugging Face's
    Dinov2WithRegistersModel (its own antialiased position interpolation), the detector as nn modules,
    torch.topk. Tokens are matched by location, so weights within rounding of each other may swap ranks."""
    transformers = pytest.importorskip("transformers", reason="the published backbone is Hugging Face's (dev extra)")
    import torch
    import torch.nn.functional as F
    from literal.dinov2 import published_detector, to_hf

    out, model = release_like
    images = tmp_path / "images"
    images.mkdir()
    image = photo(600, 450, seed=5)
    cv2.imwrite(str(images / "q.png"), image)
    data, topk = tmp_path / "data", 100
    assert main(["extract", "--images", str(images), "--split", "query", "--out", str(data), "--backend", "ort",
                 "--artifacts", str(out), "--imsize", "770", "--topk", str(topk)]) == 0
    rows, global_, cls = _read(data, "query")

    pixels = np.ascontiguousarray(published(image, 770))
    h, w = pixels.shape[1] // 14, pixels.shape[2] // 14
    assert (h, w) == (55, 41)
    config = transformers.Dinov2WithRegistersConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=518, patch_size=14,
        num_register_tokens=4, layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True)
    hf = transformers.Dinov2WithRegistersModel(config).eval()
    sd = model.state_dict()
    hf.load_state_dict(to_hf(sd, 2, set(hf.state_dict())), strict=False)
    with torch.no_grad():
        features = hf(pixel_values=torch.from_numpy(pixels[None])).last_hidden_state[0]
    detector = {k.removeprefix("detector."): v for k, v in sd.items() if k.startswith("detector.")}
    n = h * w
    by_weight, _, pooled, all_weights = (t.numpy() for t in published_detector(detector, features[5:], n))
    per_token = np.empty_like(by_weight)  # every token's descriptor, in token order
    per_token[torch.topk(torch.from_numpy(all_weights), n).indices.numpy()] = by_weight
    scale = float(all_weights.max())
    assert scale > 20  # far above the tokens' unit scale

    # our rows' tokens, from their locations (patch centres over the resized sides)
    tokens = (np.rint((rows[0, :, 0] * pixels.shape[1] - 7) / 14) * w
              + np.rint((rows[0, :, 1] * pixels.shape[2] - 7) / 14)).astype(np.int64)
    assert len(set(tokens.tolist())) == topk
    np.testing.assert_allclose(rows[0, :, 4], np.sort(all_weights)[::-1][:topk], rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(rows[0, :, 4], all_weights[tokens], rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(rows[0, :, 5:], per_token[tokens], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(global_[0], pooled, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cls[0], F.normalize(features[0], dim=-1).numpy(), rtol=1e-5, atol=1e-5)


def _cli(folder, data, artifacts, *extra):
    return main(["extract", "--images", str(folder), "--out", str(data), "--backend", "ort", "--artifacts",
                 str(artifacts), "--imsize", "56", "--topk", "8", *extra])


def test_existing_outputs_need_force_the_other_split_does_not(artifacts, folder, tmp_path, capsys):
    data = tmp_path / "data"
    assert _cli(folder, data, artifacts, "--split", "gallery") == 0
    assert _cli(folder, data, artifacts, "--split", "query") == 0  # beside the gallery: no --force needed
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    capsys.readouterr()
    assert _cli(folder, data, artifacts, "--split", "gallery") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rerankrt extract: error: --out: {data / 'dinov2_gallery_local.hdf5'}, "
                          f"{data / 'dinov2_gallery_global.pt'}, {data / 'dinov2_cls_gallery_global.pt'}, "
                          f"{data / 'dinov2_gallery_images.json'} exist (pass --force to replace them)")
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before
    (folder / "im0.png").unlink()
    assert _cli(folder, data, artifacts, "--split", "gallery", "--force") == 0
    assert _read(data, "gallery")[0].shape == (4, 8, 69)
    assert {p.name: p.read_bytes() for p in data.iterdir() if "query" in p.name} == {
        k: v for k, v in before.items() if "query" in k}


def test_a_kill_in_mid_write_keeps_the_previous_files(artifacts, folder, tmp_path):
    """SIGKILL at the first rename of the four files: the earlier files stay as they were, beside four
    staging files that the next run removes."""
    data = tmp_path / "data"
    assert _cli(folder, data, artifacts, "--split", "gallery") == 0
    before = snapshot(data)
    argv = ["extract", "--images", str(folder), "--out", str(data), "--backend", "ort", "--artifacts",
            str(artifacts), "--imsize", "56", "--topk", "8", "--split", "gallery", "--force"]
    killed = subprocess.run([sys.executable, "-c", KILLER, "os.replace", *argv], capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    after = snapshot(data)
    assert {k: v for k, v in after.items() if SUFFIX not in k} == before
    assert len([k for k in after if k.endswith(SUFFIX)]) == 4
    assert main(argv) == 0
    assert sorted(snapshot(data)) == sorted(before)


def test_an_unreadable_image_stops_the_run_and_writes_nothing(artifacts, folder, tmp_path, monkeypatch, capsys):
    """A window at a time (WINDOW = 1 here): the first image's rows are in the temporary files when the
    second fails; nothing reaches --out, and the previous files stay."""
    monkeypatch.setattr(extraction, "WINDOW", 1)
    data = tmp_path / "data"
    assert _cli(folder, data, artifacts, "--split", "gallery") == 0
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    (folder / "im1.png").write_bytes(b"")
    assert _cli(folder, data, artifacts, "--split", "gallery", "--force") == 2
    assert capsys.readouterr().err.strip().endswith(f"error: image {folder / 'im1.png'}: the file is empty (0 bytes)")
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before  # no temporary file left either


def test_query_crops_from_the_ground_truth(artifacts, tmp_path):
    images = tmp_path / "queries"
    images.mkdir()
    for name in ("all_souls_1", "radcliffe_2"):
        cv2.imwrite(str(images / f"{name}.jpg"), photo(200, 300))
    gnd = {"imlist": ["x"], "qimlist": ["radcliffe_2", "all_souls_1"],
           "gnd": [{"bbx": [30.0, 20.0, 140.0, 180.0], "easy": [0]}, {"bbx": [0, 0, 300, 200], "easy": [0]}]}
    (tmp_path / "gnd.pkl").write_bytes(pickle.dumps(gnd))
    data = tmp_path / "data"
    assert _cli(images, data, artifacts, "--split", "query", "--gnd", str(tmp_path / "gnd.pkl"), "--imsize",
                "300") == 0
    rows = _read(data, "query")[0]
    # all_souls_1: the whole image, 300 × 200 → 21 × 14 patches; radcliffe_2: 110 × 160 → 8 × 11 patches
    whole, crop = rows[0, :, :2], rows[1, :, :2]
    assert whole[:, 0].min() > 0 and whole[:, 0].max() < 1
    assert (crop[:, 0] > 20 / 200).all() and (crop[:, 0] < 180 / 200).all()
    assert (crop[:, 1] > 30 / 300).all() and (crop[:, 1] < 140 / 300).all()
    assert main(["extract", "--images", str(images), "--out", str(data), "--split", "gallery", "--gnd",
                 str(tmp_path / "gnd.pkl"), "--backend", "ort", "--artifacts", str(artifacts)]) == 2
    gnd["qimlist"] = ["radcliffe_2", "other"]
    (tmp_path / "gnd.pkl").write_bytes(pickle.dumps(gnd))
    with pytest.raises(InputError, match=r"gnd: all_souls_1.jpg is not one of its 2 queries \(qimlist\)"):
        extraction.query_boxes(gnd, image_list(images))


def test_raml_vectors_beside_the_dinov2_files(artifacts, folder, tmp_path):
    """One command describes a query for both stages: RAML's 512-d vectors of the same (cropped) images, at
    the student's 224 px for queries and the teacher's 448 px for the gallery (RAML's deployment), as the
    extraction record says."""
    import torch

    from rerankrt.data.images import RamlEncoder
    from rerankrt.models import TorchBackend, load_model

    torch.save({"meta": RAML_META, "state_dict": load_model("raml").state_dict()}, tmp_path / "raml.pth")
    data = tmp_path / "data"
    assert _cli(folder, data, artifacts, "--split", "query", "--raml-checkpoint", str(tmp_path / "raml.pth")) == 0
    raml = np.array(read_global(data / "raml_query_global.pt", 512))
    assert raml.shape == (5, 512)
    with TorchBackend("raml", checkpoint=tmp_path / "raml.pth") as backend:
        expected = RamlEncoder(backend).encode([read_image(p)[:, :, ::-1].copy() for p in image_list(folder)])
    np.testing.assert_allclose(raml, expected, rtol=1e-5, atol=5e-6)  # unit vectors: entries ≈ 0.04
    assert _cli(folder, data, artifacts, "--split", "gallery", "--raml-checkpoint", str(tmp_path / "raml.pth")) == 0
    with TorchBackend("raml", checkpoint=tmp_path / "raml.pth") as backend:
        teacher = RamlEncoder(backend, 448).encode([read_image(p)[:, :, ::-1].copy() for p in image_list(folder)])
    np.testing.assert_allclose(read_global(data / "raml_gallery_global.pt", 512), teacher, rtol=1e-5, atol=5e-6)
    assert np.abs(teacher - expected).max() > 1e-3  # another size: the comparison can fail
    records = [json.loads((data / f"dinov2_{split}_images.json").read_text())["raml"] for split in ("query", "gallery")]
    from rerankrt.runtime.sidecar import sha256

    assert records == [{"model": "raml", "checkpoint_sha256": sha256(tmp_path / "raml.pth"), "parts": {},
                        "imsize": size} for size in (224, 448)]


@pytest.mark.parametrize(("extra", "message"), [
    (["--imsize", "0"], "--imsize: expected a positive integer, got 0"),
    (["--topk", "-3"], "--topk: expected a positive integer, got -3"),
    (["--batch", "0"], "--batch: expected a positive integer, got 0"),
    (["--split", "query", "--detector", "d.pt"], "--checkpoint: the torch backend's; an exported graph or engine "
                                                  "carries its own weights"),
])
def test_bad_arguments(artifacts, folder, tmp_path, capsys, extra, message):
    args = ["extract", "--images", str(folder), "--out", str(tmp_path / "data"), "--backend", "ort",
            "--artifacts", str(artifacts)]
    assert main(args + (["--split", "gallery"] if "--split" not in extra else []) + extra) == 2
    assert capsys.readouterr().err.strip() == f"rerankrt extract: error: {message}"
    assert not (tmp_path / "data").exists()


def test_cli_torch_backend_loads_the_backbone_and_the_detector(tmp_path, capsys):
    """The released architecture from its two files (random weights here, drawn off the default ones):
    the files hold what the model computes on the preprocessed image."""
    import torch
    from weights import perturb, save_extractor

    from rerankrt.models import load_model

    model = perturb(load_model("dinov2-extractor"), gain=1.0, spread=0.1, seed=3)
    backbone, detector = save_extractor(model, tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "q.png"), photo(40, 30))
    data = tmp_path / "data"
    # no --backend: a checkpoint without --artifacts can only mean the torch backend
    args = ["extract", "--images", str(images), "--split", "query", "--out", str(data),
            "--imsize", "42", "--topk", "6", "--checkpoint", str(backbone)]
    assert main(args) == 2  # the backbone alone cannot describe an image
    assert "the DINOv2 backbone needs its AMES detector too" in capsys.readouterr().err
    assert main(args + ["--detector", str(detector)]) == 0
    rows, global_, cls = _read(data, "query", dim=768)
    pixels = preprocess(read_image(images / "q.png"), 42, {**CONFIG, "embed_dim": 768}).pixels
    assert pixels.shape == (3, 42, 28)
    with torch.no_grad():
        weights, tokens, g, c = (t[0].numpy() for t in model.eval()(torch.from_numpy(pixels[None])))
    np.testing.assert_allclose(global_[0], g, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cls[0], c, rtol=1e-5, atol=1e-6)
    order = np.argsort(-weights, kind="stable")
    np.testing.assert_allclose(rows[0, :, 4], weights[order], rtol=1e-5)
    np.testing.assert_allclose(rows[0, :, 5:], tokens[order], rtol=1e-5, atol=1e-6)
