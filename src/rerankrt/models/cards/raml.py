"""RAML (reference/models.md §4): configuration with the published preprocessing, export spec, FLOP
model (ResNet-50's, shared with CVNet's backbone). The network is `rerankrt.models.raml`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rerankrt.models.cards import IMAGE, ModelInfo
from rerankrt.models.specs import ExportSpec, Profile, Shape, TensorSpec, Tolerance


@dataclass(frozen=True)
class RamlConfig:
    """RAML (reference §4.1): ResNet-50 → GeM → L2N → Linear(2048, 512) → L2N."""

    backbone_dim: int = 2048
    output_dim: int = 512
    gem_p: float = 3.0  # initial value of the learnable GeM exponent
    gem_eps: float = 1e-6  # GeM's clamp
    l2n_eps: float = 1e-6  # L2N's *additive* eps
    student_size: int = 224  # the query encoder's input
    teacher_size: int = 448  # the database encoder's input
    # Evaluation preprocessing (§4.2): shorter side to size·8/7 (Lanczos), centre crop, ImageNet mean/std.
    resize_ratio: float = 8 / 7
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


def export_spec(cfg: RamlConfig, name: str) -> ExportSpec:
    """Square images from the student's size (queries, opt) to the teacher's (the database: the same
    architecture with the teacher's checkpoint describes the gallery at 448)."""
    size, teacher = cfg.student_size, cfg.teacher_size

    def make(shape: Shape, rng: np.random.Generator, one_query: bool) -> dict[str, np.ndarray]:
        # ImageNet-normalised pixels: roughly standard normal.
        return {"images": rng.standard_normal((shape["batch"], 3, shape["height"], shape["width"]), np.float32)}

    return ExportSpec(
        model=name,
        inputs=(TensorSpec("images", "float", ("batch", 3, "height", "width")),),
        outputs=(TensorSpec("descriptors", "float", ("batch", cfg.output_dim)),),
        profiles={"batch": Profile(1, 1, 32), "height": Profile(size, size, teacher),
                  "width": Profile(size, size, teacher)},
        trace={"batch": 2, "height": size, "width": size},
        checks=({"batch": 1, "height": size, "width": size}, {"batch": 3, "height": size, "width": size},
                {"batch": 2, "height": teacher, "width": teacher}),
        make_inputs=make,
        fp32=Tolerance(1e-4, 1e-3),
        fp16=Tolerance(5e-3, 1e-2),
        fp32_islands=("GeM's clamp, power and mean (x³ overflows fp16)", "L2 normalisation"),
        overflow_checks=({"batch": 2, "height": size, "width": size},),
    )


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def resnet50_flops(height: int, width: int, stages: int = 4) -> int:
    """ResNet-50's convolutions over one image, through `stages` stages (stride-2 3×3 in each first
    bottleneck: torchvision v1.5 and pycls alike)."""
    h, w = _conv_out(height, 7, 2, 3), _conv_out(width, 7, 2, 3)
    macs = 3 * 64 * 49 * h * w
    h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)  # max pool
    channels = 64
    for stage, blocks in enumerate((3, 4, 6, 3)[:stages]):
        width_ = 64 * 2**stage
        out = 4 * width_
        for i in range(blocks):
            stride = 2 if stage > 0 and i == 0 else 1
            h2, w2 = _conv_out(h, 3, stride, 1), _conv_out(w, 3, stride, 1)
            macs += channels * width_ * h * w  # 1×1
            macs += width_ * width_ * 9 * h2 * w2  # 3×3
            macs += width_ * out * h2 * w2  # 1×1
            if i == 0:
                macs += channels * out * h2 * w2  # the projection shortcut
            h, w, channels = h2, w2, out
    return 2 * macs


def raml_flops(cfg: RamlConfig, height: int, width: int) -> int:
    """One image: ResNet-50's convolutions and the whitening layer."""
    return resnet50_flops(height, width) + 2 * cfg.backbone_dim * cfg.output_dim


def flops(cfg: RamlConfig, sizes: dict[str, int]) -> int:
    """One call: `batch` images of `height` × `width`."""
    return sizes["batch"] * raml_flops(cfg, sizes["height"], sizes["width"])


def storage(cfg: RamlConfig) -> int:
    """A database image's float32 global descriptor (the 448 px teacher's, in the student's space)."""
    return cfg.output_dim * 4


RAML = RamlConfig()

ENTRIES = (
    ModelInfo("raml", kind=IMAGE,
              summary="RAML query encoder: ResNet-50 + GeM + whitening 2048→512 (student 224 px, teacher 448 px)",
              config=RAML, implementation="rerankrt.models.raml",
              checkpoint_format="torch.save {'meta': {architecture, pooling, whitening, …}, 'state_dict'}: "
                                "{cub,cars,sop}-S224r-T448r-resnet50-512-gem-w.pth",
              container_key="state_dict", spec=export_spec, flops=flops, storage=storage, dynamic_batching=True),
)
