"""The official BEiT v1 checkpoints: file names, download addresses and the logits they are known to give.

One table, read by `verify --variant` now and by the download/convert-by-name path later. Expected
values are the first logits on a fixed test image with the original conversion's preprocessing
(resize to the model's size, no crop, mean = std = 0.5), atol 1e-3.
"""

from __future__ import annotations

from dataclasses import dataclass

MIRROR = "https://github.com/addf400/files/releases/download/v1.0"
COCO_CATS = "http://images.cocodataset.org/val2017/000000039769.jpg"
ATOL = 1e-3


@dataclass(frozen=True)
class TestImage:
    name: str
    url: str | None  # None: the image has no stable address; `verify --image` must supply it


CATS = TestImage("coco-cats (val2017/000000039769.jpg)", COCO_CATS)
ADE_FIXTURE = TestImage("the hf-internal-testing/fixtures_ade20k test image", None)


@dataclass(frozen=True)
class Variant:
    name: str
    file: str  # unilm file name without .pth
    image_size: int
    logits_shape: tuple[int, ...]
    first_logits: tuple[float, ...] | tuple[tuple[tuple[float, ...], ...], ...] | None  # [0, :3] or [0, :3, :3, :3]
    predicted_class: int | None
    image: TestImage = CATS
    resample: str = "bilinear"  # the original conversion resized classification inputs bilinear, ADE bicubic

    @property
    def url(self) -> str:
        return f"{MIRROR}/{self.file}.pth"


_ADE_BASE = (
    ((-4.9225, -2.3954, -3.0522), (-2.8822, -1.0046, -1.7561), (-2.9549, -1.3228, -2.1347)),
    ((-5.8168, -3.4129, -4.0778), (-3.8651, -2.2214, -3.0277), (-3.8356, -2.4643, -3.3535)),
    ((-0.0078, 3.9952, 4.0754), (2.9856, 4.6944, 5.0035), (3.2413, 4.7813, 4.9969)),
)
_ADE_LARGE = (
    ((-4.3305, -2.3049, -3.0161), (-2.9591, -1.5305, -2.2251), (-3.4198, -1.8004, -2.9062)),
    ((-5.8922, -3.7435, -4.3978), (-4.2063, -2.7872, -3.4755), (-4.2791, -3.1874, -4.1681)),
    ((0.9895, 4.3467, 4.7663), (4.2476, 5.6830, 6.1518), (4.5550, 6.2495, 6.5154)),
)

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("base-pt22k", "beit_base_patch16_224_pt22k", 224, (1, 196, 8192), None, None),
        Variant("large-pt22k", "beit_large_patch16_224_pt22k", 224, (1, 196, 8192), None, None),
        Variant("base-ft22k", "beit_base_patch16_224_pt22k_ft22k", 224, (1, 21841), (2.2288, 2.4671, 0.7395), 2397),
        Variant("large-ft22k", "beit_large_patch16_224_pt22k_ft22k", 224, (1, 21841), (1.6881, -0.2787, 0.5901), 2396),
        Variant("base-ft1k", "beit_base_patch16_224_pt22k_ft1k", 224, (1, 1000), (0.1241, 0.0798, -0.6569), 285),
        Variant("large-ft1k", "beit_large_patch16_224_pt22k_ft1k", 224, (1, 1000), (0.4610, -0.0928, 0.2086), 761),
        Variant(
            "base-ft22kto1k", "beit_base_patch16_224_pt22k_ft22kto1k", 224, (1, 1000), (-1.2385, -1.0987, -1.0108), 281
        ),
        Variant(
            "large-ft22kto1k", "beit_large_patch16_224_pt22k_ft22kto1k", 224, (1, 1000), (-0.4804, 0.6257, -0.1837), 761
        ),
        Variant(
            "base-ft22kto1k-384",
            "beit_base_patch16_384_pt22k_ft22kto1k",
            384,
            (1, 1000),
            (-1.5303, -0.9484, -0.3147),
            761,
        ),
        Variant(
            "large-ft22kto1k-384",
            "beit_large_patch16_384_pt22k_ft22kto1k",
            384,
            (1, 1000),
            (-0.5122, 0.5117, -0.2113),
            761,
        ),
        Variant(
            "large-ft22kto1k-512",
            "beit_large_patch16_512_pt22k_ft22kto1k",
            512,
            (1, 1000),
            (-0.3062, 0.7261, 0.4852),
            761,
        ),
        Variant(
            "base-ade20k",
            "beit_base_patch16_640_pt22k_ft22ktoade20k",
            640,
            (1, 150, 160, 160),
            _ADE_BASE,
            None,
            ADE_FIXTURE,
            "bicubic",
        ),
        Variant(
            "large-ade20k",
            "beit_large_patch16_640_pt22k_ft22ktoade20k",
            640,
            (1, 150, 160, 160),
            _ADE_LARGE,
            None,
            ADE_FIXTURE,
            "bicubic",
        ),
    )
}


def variant_by_name(name: str) -> Variant:
    from beit_tools.errors import BeitToolsError

    try:
        return VARIANTS[name]
    except KeyError:
        raise BeitToolsError(f"unknown variant {name!r}", f"known: {', '.join(VARIANTS)}") from None
