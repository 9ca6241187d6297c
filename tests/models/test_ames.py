"""AMES: released key/shape tables, parity with the literal reference, fp16, bad input."""

from __future__ import annotations

import pytest
import torch
from conftest import unit_descriptors
from literal.ames import PublishedStyle, per_pair
from weights import perturb

from rerankrt.core.errors import InputError
from rerankrt.models import load_model
from rerankrt.models.fp32 import l2_normalize


def ames_keys(dist: bool) -> dict[str, tuple]:
    """§2.2's table for DINOv2 (local_dim 768)."""
    keys: dict[str, tuple] = {"mtc_token": (128,)}
    if dist:
        keys |= {"remap_local.0.W": (768, 128), "remap_local.1.weight": (128, 128), "remap_local.1.bias": (128,),
                 "remap_local.2.weight": (128,), "remap_local.2.bias": (128,)}
    else:
        keys |= {"remap_local.0.weight": (128, 768), "remap_local.0.bias": (128,),
                 "remap_local.1.weight": (128,), "remap_local.1.bias": (128,)}
    for i in range(5):
        p = f"decoder.layers.{i}."
        for attn in ("self_attn", "cross_attn"):
            keys |= {p + attn + ".in_proj_weight": (384, 128), p + attn + ".in_proj_bias": (384,),
                     p + attn + ".out_proj.weight": (128, 128), p + attn + ".out_proj.bias": (128,)}
        keys |= {p + "linear1.weight": (1024, 128), p + "linear1.bias": (1024,),
                 p + "linear2.weight": (128, 1024), p + "linear2.bias": (128,)}
        for n in (1, 2, 3):
            keys |= {p + f"norm{n}.weight": (128,), p + f"norm{n}.bias": (128,)}
    return keys | {"classifier.weight": (1, 128), "classifier.bias": (1,)}


@pytest.mark.parametrize(("name", "local_dim", "params"), [
    ("ames", 768, 2_079_745), ("ames", 1024, 2_112_513),
    ("ames-dist", 768, 2_096_129), ("ames-dist", 1024, 2_128_897),
])
def test_state_dict_matches_release(name, local_dim, params):
    model = load_model(name, local_dim=local_dim)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = ames_keys(name == "ames-dist")
    if local_dim == 1024:
        key = "remap_local.0.W" if name == "ames-dist" else "remap_local.0.weight"
        expected[key] = (1024, 128) if name == "ames-dist" else (128, 1024)
    assert shapes == expected
    assert sum(p.numel() for p in model.parameters()) == params


def randomised(name: str, **config) -> torch.nn.Module:
    """The model with weights at a scale where the logits depend on the inputs (tests/weights.py)."""
    return perturb(load_model(name, **config), gain=2.0, spread=0.1)


def pairs(rng, b: int, q: int, t: int, dim: int = 768):
    qd, qm = unit_descriptors(rng, (b, q, dim), rng.integers(1, q + 1, b))
    dd, dm = unit_descriptors(rng, (b, t, dim), rng.integers(1, t + 1, b))
    return [torch.from_numpy(a) for a in (qd, qm, dd, dm)]


@pytest.mark.parametrize("name", ["ames", "ames-dist"])
@pytest.mark.parametrize(("b", "q", "t"), [(3, 17, 5), (2, 4, 23), (1, 1, 1), (4, 30, 30), (11, 9, 6)])
def test_matches_literal_reference(name, b, q, t, rng):
    model = randomised(name)
    inputs = pairs(rng, b, q, t)
    with torch.no_grad():
        ours = model(*inputs)
        literal = per_pair(model.state_dict(), *inputs, binarized=name == "ames-dist")
        published = PublishedStyle(model.state_dict(), binarized=name == "ames-dist")(*inputs)
    assert ours.shape == (b,)
    if b > 1:  # the logits depend on the pair, so the comparison can tell models apart
        assert literal.std() > 0.05
    torch.testing.assert_close(ours, literal, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours, published, atol=1e-5, rtol=0)


def test_cpu_chunking_equals_one_batch_to_rounding(rng):
    """Eager CPU forwards run `cpu_chunk_pairs` pairs at a time; the result is the one-batch result, equal
    to float32 rounding (chunking changes how the GEMMs are blocked, so not bit for bit: 1.2e-6 apart on a
    logit of 3 was seen): a few ulps of the largest logit."""
    model = randomised("ames")
    inputs = pairs(rng, 2 * model.cpu_chunk_pairs + 3, 10, 7)
    with torch.no_grad():
        chunked, whole = model(*inputs), model._logits(*inputs)
    assert whole.std() > 0.05  # logits that differ between pairs
    ulp = torch.finfo(torch.float32).eps * float(whole.abs().max())
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=16 * ulp)


@pytest.mark.parametrize("name", ["ames", "ames-dist"])
def test_one_query_computes_its_first_layer_rows_once(name, rng):
    """Against one query (the scorer's call) the first layer's query rows are computed once for every pair
    (`BlockAttention.one_query`): the logits are those of the query repeated per pair, to float32 rounding,
    with padding in the query and an all-padding database image among the pairs."""
    model = randomised(name)
    q_desc, q_mask, db_desc, db_mask = pairs(rng, 6, 12, 5)
    q_mask[0, -3:] = True
    db_mask[2] = True
    with torch.no_grad():
        s, t = (model.remap_local(l2_normalize(d)) for d in (q_desc[:1], db_desc))
        once = model._match(s, q_mask[:1], t, db_mask)
        repeated = model._match(s.expand(6, -1, -1), q_mask[:1].expand(6, -1), t, db_mask)
    assert repeated.std() > 0.05
    ulp = torch.finfo(torch.float32).eps * float(repeated.abs().max())
    torch.testing.assert_close(once, repeated, rtol=1e-5, atol=16 * ulp)


def test_cvnet_dimension(rng):
    model = randomised("ames", local_dim=1024)
    inputs = pairs(rng, 2, 9, 4, dim=1024)
    with torch.no_grad():
        torch.testing.assert_close(model(*inputs), per_pair(model.state_dict(), *inputs, binarized=False),
                                   atol=1e-5, rtol=0)


def test_padding_content_is_ignored(rng):
    """Whatever sits in padded rows (zeros in the files) does not change the logit."""
    model = randomised("ames")
    qd, qm, dd, dm = pairs(rng, 3, 12, 6)
    with torch.no_grad():
        ref = model(qd, qm, dd, dm)
        qd2, dd2 = qd.clone(), dd.clone()
        qd2[qm] = 5.0
        dd2[dm] = -3.0
        torch.testing.assert_close(model(qd2, qm, dd2, dm), ref, atol=1e-5, rtol=0)


def test_all_padding_image_gives_one_finite_logit(rng):
    """Documented behaviour: both images all padding → the same finite logit whatever the descriptors."""
    model = randomised("ames")
    qd, qm, dd, dm = pairs(rng, 4, 8, 5)
    qm[:] = True
    dm[:] = True
    with torch.no_grad():
        out = model(qd, qm, dd, dm)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, out[:1].expand(4), rtol=1e-6, atol=1e-6 * float(out.abs().max()))


@pytest.mark.parametrize("name", ["ames", "ames-dist"])
def test_float16_padded_rows_stay_finite(name, rng):
    model = randomised(name)
    inputs = pairs(rng, 4, 40, 12)
    with torch.no_grad():
        ref = model(*inputs)
        half = model.half()(inputs[0].half(), inputs[1], inputs[2].half(), inputs[3])
    assert half.dtype == torch.float16
    assert torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), ref, atol=0.05 * ref.abs().max().item(), rtol=0)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda a: (a[0][..., :700], *a[1:]), "q_desc: expected shape [B, Q, 768], got [2, 5, 700]"),
    (lambda a: (a[0], a[1].float(), *a[2:]), "q_mask: expected dtype torch.bool (True = padding), got torch.float32"),
    (lambda a: (*a[:3], a[3][:, :2]), "db_mask: expected shape [2, 3], got [2, 2]"),
    (lambda a: (a[0].int(), *a[1:]),
     "q_desc: expected a floating dtype (float32, float16 or bfloat16), got torch.int32"),
    (lambda a: (a[0][:, :0], a[1][:, :0], *a[2:]), "q_desc: needs at least one query descriptor (Q ≥ 1), got 0"),
    (lambda a: (*a[:2], a[2][:, :0], a[3][:, :0]), "db_desc: needs at least one database descriptor (T ≥ 1), got 0"),
    (lambda a: (*a[:2], a[2][:1], a[3][:1]), "db_desc: expected 2 pairs (q_desc's B), got 1"),
])
def test_bad_input(mutate, message, rng):
    model = load_model("ames")
    with pytest.raises(InputError) as err:
        model(*mutate(pairs(rng, 2, 5, 3)))
    assert str(err.value) == message


def test_nan_descriptor_is_named(rng):
    model = load_model("ames")
    qd, qm, dd, dm = pairs(rng, 2, 5, 3)
    dd[1, 0, 3] = float("nan")
    with pytest.raises(InputError, match=r"^db_desc: contains 1 NaN or infinite values$"):
        model(qd, qm, dd, dm)
