"""The DINOv2 extractor (reference/extraction.md): ViT-B/14 with 4 registers and the AMES detector. Its
configuration with the published extraction settings, export spec, FLOP model. The network is
`rerankrt.models.dinov2`; the host side (OpenCV preprocessing, top-k selection, the files) is
`rerankrt.data.extraction`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rerankrt.models.cards import EXTRACTOR, ModelInfo
from rerankrt.models.specs import ExportSpec, Profile, Shape, TensorSpec, Tolerance


@dataclass(frozen=True)
class Dinov2Config:
    """`dinov2_vitb14_reg` (§2) and the detector (§5); the extraction settings the released files used."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    patch_size: int = 14
    grid: int = 37  # img_size 518 / 14: the trained position grid
    registers: int = 4
    layer_norm_eps: float = 1e-6
    bn_eps: float = 1e-5
    # Published extraction (§4, §5): the longer side scaled to 770 px (LOCORE's and the ELViS demo's), the
    # 700 highest-weight tokens kept (AMES's; LOCORE keeps 100), ImageNet mean/std in RGB order.
    imsize: int = 770
    topk: int = 700
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _side(imsize: int, patch: int) -> int:
    """A side of `imsize` pixels rounded to whole patches: the profile's opt."""
    return max(round(imsize / patch), 1) * patch


def export_spec(cfg: Dinov2Config, name: str) -> ExportSpec:
    """Images of any size (multiples of 14, 14 … 1022 px a side) in equal-size batches of up to 8; every
    token's weight and descriptor out, and the two global vectors. A side may be one patch: §4 gives every
    axis at least one, so a panorama's short side can be far below 224 px. Validated where the position
    grid shrinks (16 × 16), stays (37 × 37) and grows (47 × 33, H ≠ W)."""
    p, e = cfg.patch_size, cfg.embed_dim
    opt = _side(cfg.imsize, p)

    def make(shape: Shape, rng: np.random.Generator, one_query: bool) -> dict[str, np.ndarray]:
        # ImageNet-normalised pixels: roughly standard normal
        return {"images": rng.standard_normal((shape["batch"], 3, shape["height"], shape["width"]), np.float32)}

    side = Profile(p, opt, 73 * p)
    return ExportSpec(
        model=name,
        inputs=(TensorSpec("images", "float", ("batch", 3, "height", "width")),),
        outputs=(TensorSpec("weights", "float", ("batch", "tokens")),
                 TensorSpec("tokens", "float", ("batch", "tokens", e)),
                 TensorSpec("global", "float", ("batch", e)), TensorSpec("cls", "float", ("batch", e))),
        profiles={"batch": Profile(1, 1, 8), "height": side, "width": side},
        trace={"batch": 2, "height": 29 * p, "width": 21 * p},
        checks=({"batch": 1, "height": 16 * p, "width": 16 * p}, {"batch": 2, "height": 37 * p, "width": 37 * p},
                {"batch": 1, "height": 47 * p, "width": 33 * p}),
        make_inputs=make,
        # Scaled: each output's error is a fixed fraction of its largest magnitude, whatever the weights set
        # that scale to. With release-like weights (LayerScale up to 0.2, BatchNorm variances down to 1e-3)
        # the detector's weights reach 26 at full size (100 at the tests' small size), tokens stay below 0.4;
        # ONNX Runtime and PyTorch FP32 are then each 7e-7 of the scale from a float64 evaluation, in every
        # output and at every grid (16², 37², 47 × 33, 55 × 41 at 770 px): rounding, amplified by BatchNorm's
        # 1/√var, not a graph error (an absolute 1e-4 failed at 1.2e-4). FP16 vs FP32: 1e-3 of the scale.
        fp32=Tolerance(1e-5, 1e-4, scaled=True),
        fp16=Tolerance(1e-2, 5e-2, scaled=True),
        fp32_islands=("LayerNorm (overflow)", "attention scores and softmax", "the position grid's resize",
                      "the detector's L2 norm and softplus weight (what the selection sorts by)",
                      "the global vectors' mean and L2 norm"),
        ranking={"batch": 1, "height": 37 * p, "width": 37 * p},  # the weights that pick the top-k tokens
        ranking_axis=1,
        overflow_checks=({"batch": 1, "height": 37 * p, "width": 37 * p},),
    )


def extractor_flops(cfg: Dinov2Config, height: int, width: int, batch: int = 1) -> int:
    """One call of `batch` images: the patch embedding, the blocks over 1 + registers + N tokens and the
    detector per image, the position resize once per call (softmax, norms and element-wise work not
    counted)."""
    e, p, g = cfg.embed_dim, cfg.patch_size, cfg.grid
    h, w = height // p, width // p
    n = h * w
    t = n + 1 + cfg.registers
    image = n * 3 * p * p * e  # patch embedding
    image += cfg.depth * (4 * t * e * e + 2 * t * t * e + 2 * t * e * cfg.mlp_dim)  # qkv, proj; scores, values; MLP
    image += n * e * e + n * e  # detector: conv1, conv2
    resize = h * g * g * e + h * w * g * e  # A_h · P, then · A_wᵀ
    return 2 * (batch * image + resize)


def flops(cfg: Dinov2Config, sizes: dict[str, int]) -> int:
    return extractor_flops(cfg, sizes["height"], sizes["width"], sizes["batch"])


def storage(cfg: Dinov2Config) -> int:
    """A database image's file row block as the released HDF5 keeps it: topk × (5 + D) float32."""
    return cfg.topk * (5 + cfg.embed_dim) * 4


DINOV2 = Dinov2Config()

ENTRIES = (
    ModelInfo("dinov2-extractor", kind=EXTRACTOR,
              summary="DINOv2 ViT-B/14 with 4 registers + the AMES detector: an image → local descriptors, "
                      "weights, global and cls vectors (what every AMES/LOCORE file holds)",
              config=DINOV2, implementation="rerankrt.models.dinov2",
              checkpoint_format="plain state_dict: dinov2_vitb14_reg4_pretrain.pth; with detector= "
                                "{'state': state_dict}: dinov2_detector.pt",
              container_key=None, spec=export_spec, flops=flops, storage=storage, dynamic_batching=True,
              parts={"detector": ("detector.", "state")}),
)
