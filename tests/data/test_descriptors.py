"""Official descriptor files: round trips, partial reads, virtual datasets, malformed files."""

from __future__ import annotations

import pickle
import re
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import unit_descriptors
from hypothesis import given, settings
from hypothesis import strategies as st

from rerankrt.core.errors import DescriptorFileError
from rerankrt.data import LocalDescriptorFile, read_global, read_gnd, read_nn, write_global, write_local, write_nn


@pytest.fixture
def local_file(tmp_path, rng):
    desc, mask = unit_descriptors(rng, (6, 10, 16), rng.integers(1, 11, 6))
    scale = rng.integers(0, 3, (6, 10))
    weight = np.sort(rng.random((6, 10)).astype(np.float32), axis=1)[:, ::-1]
    xy = rng.random((6, 10, 2)).astype(np.float32)
    path = tmp_path / "dinov2_gallery_local.hdf5"
    write_local(path, desc, mask, scale=scale, weight=weight, xy=xy)
    return path, desc, mask, scale, weight, xy


def test_local_round_trip_in_any_order(local_file):
    path, desc, mask, scale, weight, xy = local_file
    with LocalDescriptorFile(path, dim=16) as f:
        assert (f.num_images, f.topk, f.dim) == (6, 10, 16)
        got = f.read([4, 0, 4, 2], n=7)
    sel = [4, 0, 4, 2]
    np.testing.assert_array_equal(got.desc, desc[sel, :7])
    np.testing.assert_array_equal(got.mask, mask[sel, :7])
    np.testing.assert_array_equal(got.scale, scale[sel, :7])
    np.testing.assert_array_equal(got.weight, weight[sel, :7])
    np.testing.assert_array_equal(got.xy, xy[sel, :7])
    assert got.desc.dtype == np.float32 and got.mask.dtype == bool and got.scale.dtype == np.int64


def test_layout_columns(local_file):
    """Column 3 is the mask (1 = padding), descriptors start at column 5 (§1.3)."""
    path, desc, mask, scale, *_ = local_file
    with h5py.File(path) as f:
        raw = f["features"][:]
    assert raw.shape == (6, 10, 21)
    np.testing.assert_array_equal(raw[..., 3], mask.astype(np.float32))
    np.testing.assert_array_equal(raw[..., 2], scale)
    np.testing.assert_array_equal(raw[..., 5:], desc)


def test_float16_file_reads_as_float32(tmp_path, rng):
    desc, mask = unit_descriptors(rng, (2, 4, 8), np.array([4, 2]))
    path = tmp_path / "gldv2_local.hdf5"
    write_local(path, desc, mask, dtype=np.float16)
    with LocalDescriptorFile(path) as f:
        got = f.read([1])
    assert got.desc.dtype == np.float32
    np.testing.assert_allclose(got.desc, desc[[1]], atol=1e-3)


def test_virtual_dataset(tmp_path, rng):
    """+1M files are h5py virtual datasets: gallery rows first, then the distractors."""
    parts = []
    for i, n in enumerate((3, 4)):
        desc, mask = unit_descriptors(rng, (n, 5, 8), rng.integers(1, 6, n))
        write_local(tmp_path / f"part{i}.hdf5", desc, mask)
        parts.append(desc)
    layout = h5py.VirtualLayout(shape=(7, 5, 13), dtype=np.float32)
    layout[0:3] = h5py.VirtualSource(tmp_path / "part0.hdf5", "features", shape=(3, 5, 13))
    layout[3:7] = h5py.VirtualSource(tmp_path / "part1.hdf5", "features", shape=(4, 5, 13))
    with h5py.File(tmp_path / "r1m_local.hdf5", "w") as f:
        f.create_virtual_dataset("features", layout)
    with LocalDescriptorFile(tmp_path / "r1m_local.hdf5") as f:
        got = f.read([5, 1], n=3)
    np.testing.assert_array_equal(got.desc[0], parts[1][2, :3])
    np.testing.assert_array_equal(got.desc[1], parts[0][1, :3])


def test_local_file_errors(tmp_path, local_file):
    path = local_file[0]
    with pytest.raises(DescriptorFileError, match=re.escape(
            f"{path}: expected descriptors of dimension 768, the file has 16")):
        LocalDescriptorFile(path, dim=768)
    with LocalDescriptorFile(path) as f:
        with pytest.raises(DescriptorFileError, match=re.escape(f"{path}: image indices must be in [0, 6), got [6]")):
            f.read([0, 6])
        with pytest.raises(DescriptorFileError, match=re.escape(f"{path}: n must be in [1, 10], got 11")):
            f.read([0], n=11)
    other = tmp_path / "other.hdf5"
    with h5py.File(other, "w") as f:
        f.create_dataset("descriptors", data=np.zeros((2, 3, 8)))
    with pytest.raises(DescriptorFileError, match=re.escape(
            f"{other}: expected a dataset 'features' [N, topk, 5 + D], found ['descriptors']")):
        LocalDescriptorFile(other)
    narrow = tmp_path / "narrow.hdf5"
    with h5py.File(narrow, "w") as f:
        f.create_dataset("features", data=np.zeros((2, 3, 4)))
    with pytest.raises(DescriptorFileError, match=re.escape(
            f"{narrow}: 'features' must be [N, topk, 5 + D] with D ≥ 1 (x, y, scale, mask, weight, descriptor), "
            "got shape [2, 3, 4]")):
        LocalDescriptorFile(narrow)
    text = tmp_path / "text.hdf5"
    text.write_text("not hdf5")
    with pytest.raises(DescriptorFileError, match=re.escape(f"{text}: not a readable HDF5 file")):
        LocalDescriptorFile(text)


def test_nan_descriptors_are_named(tmp_path, rng):
    desc, mask = unit_descriptors(rng, (3, 4, 8), np.array([4, 4, 4]))
    desc[2, 1, 0] = np.nan
    path = tmp_path / "nan_local.hdf5"
    write_local(path, desc, mask)
    with LocalDescriptorFile(path) as f:
        f.read([0, 1])
        with pytest.raises(DescriptorFileError, match=re.escape(f"{path}: NaN or infinite descriptors in images [2]")):
            f.read([1, 2])


def test_global_round_trip_and_size_check(tmp_path, rng):
    vecs = rng.standard_normal((5, 12)).astype(np.float32)
    path = tmp_path / "dinov2_gallery_global.pt"
    write_global(path, vecs)
    assert path.stat().st_size == 5 * 12 * 4  # raw float32, no header
    got = read_global(path, 12)
    assert isinstance(got, np.memmap) and got.shape == (5, 12)
    np.testing.assert_array_equal(got, vecs)
    with pytest.raises(DescriptorFileError, match=re.escape(
            f"{path}: a raw float32 [N, 7] file must hold a positive multiple of 28 bytes, it holds 240")):
        read_global(path, 7)


def test_nn_round_trip(tmp_path, rng):
    sims = rng.random((3, 8)).astype(np.float32)
    idx = rng.integers(0, 100, (3, 8))
    path = tmp_path / "nn_superglobal.pkl"
    write_nn(path, sims, idx)
    got_sims, got_idx = read_nn(path, num_db=100)
    np.testing.assert_array_equal(got_sims, sims)
    np.testing.assert_array_equal(got_idx, idx)
    assert got_idx.dtype == np.int64


def test_nn_written_by_torch_reads_without_torch(tmp_path):
    """The released files are `pickle.dump(tensor)`; the reader decodes them with numpy only."""
    data = torch.tensor([[[0.9, 0.5], [0.8, 0.1]], [[3.0, 7.0], [1.0, 0.0]]])
    path = tmp_path / "nn.pkl"
    with open(path, "wb") as f:
        pickle.dump(data[:, :, :], f)
    with open(tmp_path / "nn_view.pkl", "wb") as f:  # a strided view: offset and strides are honoured
        pickle.dump(data.transpose(1, 2)[:, 1:], f)
    sims, idx = read_nn(path)
    np.testing.assert_array_equal(idx, [[3, 7], [1, 0]])
    np.testing.assert_allclose(sims, [[0.9, 0.5], [0.8, 0.1]])
    view = np.asarray(pickle.load(open(tmp_path / "nn_view.pkl", "rb")))
    sims_v, idx_v = read_nn(tmp_path / "nn_view.pkl")
    np.testing.assert_array_equal(idx_v, view[1].astype(np.int64))


def test_nn_errors(tmp_path):
    path = tmp_path / "nn.pkl"
    write_nn(path, np.ones((2, 3)), np.array([[0, 1, 2], [3, 4, 9]]))
    with pytest.raises(DescriptorFileError, match=re.escape(
            f"{path}: database index 9 is out of range for a database of 5 images")):
        read_nn(path, num_db=5)
    frac = tmp_path / "frac.pkl"
    with open(frac, "wb") as f:
        pickle.dump(np.array([[[1.0]], [[2.5]]]), f)
    with pytest.raises(DescriptorFileError, match=re.escape(f"{frac}: database indices (row 1) must be whole numbers")):
        read_nn(frac)
    flat = tmp_path / "flat.pkl"
    with open(flat, "wb") as f:
        pickle.dump(np.zeros((3, 4)), f)
    with pytest.raises(DescriptorFileError, match=re.escape(
            f"{flat}: expected a [2, n_queries, K] array (similarities, indices), got shape [3, 4]")):
        read_nn(flat)


def test_pickle_with_foreign_globals_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"gnd": [], "imlist": [], "qimlist": [], "x": re.compile("a")}, f)
    with pytest.raises(DescriptorFileError, match=re.escape("global re._compile is not allowed")):
        read_gnd(path)


@pytest.mark.parametrize(("name", "num_db"), [("roxford5k", 4993), ("rparis6k", 6322)])
def test_real_revisited_ground_truth(revisitop, name, num_db):
    gnd = read_gnd(revisitop / f"gnd_{name}.pkl")
    assert len(gnd["qimlist"]) == 70 and len(gnd["gnd"]) == 70
    assert len(gnd["imlist"]) == num_db
    first = gnd["gnd"][0]
    assert first["easy"].dtype == np.int64 and len(first["bbx"]) == 4
    assert all(q["easy"].size + q["hard"].size > 0 for q in gnd["gnd"])


def test_gnd_index_out_of_range(tmp_path):
    path = tmp_path / "gnd_bad.pkl"
    with open(path, "wb") as f:
        pickle.dump({"gnd": [{"easy": [0, 5], "hard": [], "junk": [], "bbx": [0, 0, 1, 1]}],
                     "imlist": ["a", "b"], "qimlist": ["q"]}, f)
    with pytest.raises(DescriptorFileError, match=re.escape(f"{path}: query 0 'easy' holds index 5 outside [0, 2)")):
        read_gnd(path)


def test_gnd_bare_number_is_no_index_list(tmp_path):
    """A bare index where a list belongs is a malformed file, not a list of one (hypothesis found {'easy': 0})."""
    path = tmp_path / "gnd_bad.pkl"
    path.write_bytes(pickle.dumps({"gnd": [{"easy": 0}], "imlist": ["a", "b"], "qimlist": ["q"]}))
    with pytest.raises(DescriptorFileError, match=re.escape(f"{path}: query 0 'easy' is not a list of image indices")):
        read_gnd(path)


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    path = tmp_path / "nn.pkl"
    write_nn(path, np.zeros((1, 2)), np.zeros((1, 2)))
    before = path.read_bytes()

    def dump_half_then_fail(obj, f):
        f.write(b"half a pickle")
        raise OSError("disk full")

    monkeypatch.setattr("rerankrt.data.descriptors.pickle.dump", dump_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_nn(path, np.ones((1, 2)), np.ones((1, 2)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nn.pkl"]
    assert path.read_bytes() == before  # the previous file is intact


@settings(max_examples=30, deadline=None)
@given(data=st.data(), images=st.integers(1, 6), topk=st.integers(1, 9), dim=st.integers(1, 5),
       half=st.booleans())
def test_local_files_round_trip_whatever_the_layout(data, images, topk, dim, half):
    """Any number of images, descriptors and dimensions, any padding (an image may be all padding), stored
    as float32 or float16: a read of any images in any order, repeats included, and any first n of each,
    gives back what was written (padded rows as zeros, True in the mask)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    desc = rng.standard_normal((images, topk, dim)).astype(np.float16 if half else np.float32)
    valid = np.array(data.draw(st.lists(st.integers(0, topk), min_size=images, max_size=images), label="valid"))
    mask = np.arange(topk) >= valid[:, None]
    weight = rng.random((images, topk)).astype(np.float32)
    order = data.draw(st.lists(st.integers(0, images - 1), min_size=1, max_size=8), label="order")
    n = data.draw(st.integers(1, topk), label="n")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dinov2_gallery_local.hdf5"
        write_local(path, desc, mask, weight=weight, dtype=np.float16 if half else np.float32)
        with LocalDescriptorFile(path, dim=dim) as f:
            got = f.read(order, n=n)
    expected = np.where(mask[..., None], 0.0, desc.astype(np.float32))[order, :n]
    np.testing.assert_array_equal(got.desc, expected)
    np.testing.assert_array_equal(got.mask, mask[order, :n])
    np.testing.assert_array_equal(got.weight, weight.astype(np.float16 if half else np.float32)[order, :n])
    assert got.desc.dtype == np.float32 and got.mask.dtype == np.bool_
