"""The official BEiT checkpoints as one keyword table: where each file lives, what it is, what it computes.

`convert --variant NAME` downloads an entry, checks that what arrived is the architecture listed
here, and names the output after the Hub model; `verify` compares with the logits the entry is known
to give. Expected values are the first logits on a fixed test image with the original conversion's
preprocessing (resize to the model's size, no crop, mean = std = 0.5), atol 1e-3.

Everything structural (hidden size, layers, positions) follows from `size` and `positions`, so the
architecture a variant promises is an `Arch` built from the entry, the same type detection returns.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from beit_tools.core.arch import Arch, Family, default_out_indices

ATOL = 1e-3
# Where the files live: the current address first, then the older ones (dead or signed today, kept so
# a site that still serves them, or an internal copy of them, can be reached). An address is a folder
# (the file name is appended) or a template with {file} (for signed links with a query string).
V1_MIRRORS = (
    "https://github.com/addf400/files/releases/download/v1.0",
    "https://conversationhub.blob.core.windows.net/beit-share-public/beit",
    "https://unilm.blob.core.windows.net/beit",
)
V2_MIRRORS = (
    "https://github.com/addf400/files/releases/download/BEiT-v2",
    "https://conversationhub.blob.core.windows.net/beit-share-public/beitv2",
)
# DiT's links in unilm's README are signed (valid until 2033-06-08); the unsigned ones came before.
DIT_SIGNATURE = (
    "?sv=2022-11-02&ss=b&srt=o&sp=r&se=2033-06-08T16:48:15Z&st=2023-06-08T08:48:15Z&spr=https"
    "&sig=a9VXrihTzbWyVfaIDlIT1Z0FoR1073VB0RLQUMuudD4%3D"
)
DIT_PRETRAINED = (
    "https://layoutlm.blob.core.windows.net/dit/dit-pts/{file}.pth" + DIT_SIGNATURE,
    "https://layoutlm.blob.core.windows.net/dit/dit-pts",
)
DIT_FINETUNED = (
    "https://layoutlm.blob.core.windows.net/dit/dit-fts/{file}.pth" + DIT_SIGNATURE,
    "https://layoutlm.blob.core.windows.net/dit/dit-fts",
)
COCO_CATS = "http://images.cocodataset.org/val2017/000000039769.jpg"

SIZES: dict[str, dict[str, int]] = {
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
}
# Label set -> number of classes.
LABEL_SETS = {"imagenet-22k": 21841, "imagenet-1k": 1000, "ade20k-150": 150, "rvlcdip-16": 16}
# How position information is stored: per-layer relative tables, one shared table, or absolute embeddings.
POSITIONS = {
    "layer": {"use_relative_position_bias": True},
    "shared": {"use_shared_relative_position_bias": True},
    "absolute": {"use_absolute_position_embeddings": True},
}
VISUAL_TOKENS = 8192
# mmseg's UperNet configs for BEiT: an FCN auxiliary head with one 3x3 conv of 256 channels.
AUXILIARY_HEAD = {"use_auxiliary_head": True, "auxiliary_channels": 256, "auxiliary_num_convs": 1}


@dataclass(frozen=True)
class TestImage:
    name: str
    url: str | None = None  # a plain address
    hub: tuple[str, str, str, str] | None = None  # (repo type, repo id, file, revision) on the Hugging Face Hub


CATS = TestImage("coco-cats (val2017/000000039769.jpg)", url=COCO_CATS)
ADE_FIXTURE = TestImage(
    "ADE_val_00000001.jpg of hf-internal-testing/fixtures_ade20k",
    hub=("dataset", "hf-internal-testing/fixtures_ade20k", "ADE_val_00000001.jpg", "main"),
)


@dataclass(frozen=True)
class Expected:
    """What the original conversion saw this checkpoint compute on its test image."""

    shape: tuple[int, ...]
    first: tuple[Any, ...] | None = None  # logits[0, :3], or logits[0, :3, :3, :3] for segmentation
    top_class: int | None = None
    image: TestImage = CATS
    resample: str = "bilinear"  # the original conversion resized classification inputs bilinear, ADE bicubic


@dataclass(frozen=True)
class Variant:
    name: str
    file: str  # unilm file name, without .pth
    family: Family
    size: str  # a key of SIZES
    image_size: int
    output_name: str  # the Hub-style folder name convert writes by default
    params_m: float  # parameters in millions (checked against the layout by the tests)
    labels: str | None = None  # a key of LABEL_SETS; None for visual tokens
    positions: str = "layer"
    layer_scale: bool = True
    expected: Expected | None = None
    mirrors: tuple[str, ...] = V1_MIRRORS
    note: str = ""
    reported: str = ""  # the original authors' result for this file, as published (not re-measured here)
    series: str = "BEiT"  # BEiT, BEiT v2, DiT
    normalization: str = "half"  # how its inputs were normalised in training (a key of arch.NORMALIZATIONS)

    def urls(self, mirror: str | None = None) -> tuple[str, ...]:
        """Addresses to try in order; a mirror replaces them all (an air-gapped site reaches nothing else)."""
        bases = (mirror,) if mirror else self.mirrors
        return tuple(
            base.format(file=self.file) if "{file}" in base else f"{base.rstrip('/')}/{self.file}.pth" for base in bases
        )

    @property
    def filename(self) -> str:
        return f"{self.file}.pth"

    @property
    def num_labels(self) -> int:
        return LABEL_SETS[self.labels] if self.labels else 0

    def arch(self) -> Arch:
        """The architecture this file holds, as detection would report it."""
        fields: dict[str, Any] = {
            **SIZES[self.size],
            **POSITIONS[self.positions],
            "image_size": self.image_size,
            "layer_scale": self.layer_scale,
            "num_labels": self.num_labels,
            "normalization": self.normalization,
        }
        if self.family is Family.MIM:
            fields |= {"use_mask_token": True, "vocab_size": VISUAL_TOKENS}
        if self.family is Family.SEGMENTATION:
            fields |= {"out_indices": default_out_indices(fields["num_hidden_layers"]), **AUXILIARY_HEAD}
        return Arch(family=self.family, **fields)

    def mismatches(self, arch: Arch) -> list[str]:
        """How a detected architecture differs from this entry, on the fields a wrong file would change."""
        promised = self.arch()
        fields = ["family", "hidden_size", "num_hidden_layers", "image_size"]
        fields.append("vocab_size" if self.family is Family.MIM else "num_labels")
        out = []
        for name in fields:
            want, got = getattr(promised, name), getattr(arch, name)
            if want != got:
                show = (lambda v: v.value) if name == "family" else str
                out.append(f"{name.replace('_', ' ')} {show(got)} where {self.name} has {show(want)}")
        return out

    def to_dict(self) -> dict[str, Any]:
        urls = self.urls()
        return {
            "name": self.name,
            "file": self.filename,
            "url": urls[0],
            "mirrors": list(urls[1:]),
            "family": self.family.value,
            "hf_class": self.arch().hf_class,
            "size": self.size,
            "image_size": self.image_size,
            "labels": self.labels,
            "num_labels": self.num_labels,
            "series": self.series,
            "normalization": self.normalization,
            "params_m": self.params_m,
            "output_name": self.output_name,
            "expected_logits": self.expected is not None and self.expected.first is not None,
            "note": self.note,
            "reported": self.reported,
        }


@dataclass(frozen=True)
class Registry:
    variants: dict[str, Variant] = field(default_factory=dict)

    def get(self, name: str) -> Variant:
        from beit_tools.errors import UsageError

        try:
            return self.variants[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.variants), n=3, cutoff=0.5)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise UsageError(f"unknown variant {name!r}", f"{hint}`beit-tools variants` lists them all") from None


def _ade(first: tuple[Any, ...]) -> Expected:
    return Expected((1, 150, 160, 160), first, image=ADE_FIXTURE, resample="bicubic")


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
_MIM_SHAPE = Expected((1, 196, VISUAL_TOKENS))
_CLS, _MIM, _SEG = Family.CLASSIFICATION, Family.MIM, Family.SEGMENTATION

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            name="base-pt22k",
            file="beit_base_patch16_224_pt22k",
            family=_MIM,
            size="base",
            image_size=224,
            positions="shared",
            output_name="beit-base-patch16-224-pt22k",
            params_m=92.0,
            expected=_MIM_SHAPE,
            note="self-supervised on ImageNet-22k",
        ),
        Variant(
            name="large-pt22k",
            file="beit_large_patch16_224_pt22k",
            family=_MIM,
            size="large",
            image_size=224,
            positions="shared",
            output_name="beit-large-patch16-224-pt22k",
            params_m=311.5,
            expected=_MIM_SHAPE,
            note="self-supervised on ImageNet-22k",
        ),
        Variant(
            name="base-pt1k-800ep",
            file="beit_base_patch16_224_pt1k_800ep",
            family=_MIM,
            size="base",
            image_size=224,
            positions="absolute",
            layer_scale=False,
            output_name="beit-base-patch16-224-pt1k-800ep",
            params_m=92.1,
            note="self-supervised on ImageNet-1k for 800 epochs (abs. positions, no layer scale)",
        ),
        Variant(
            name="base-ft22k",
            file="beit_base_patch16_224_pt22k_ft22k",
            family=_CLS,
            size="base",
            image_size=224,
            labels="imagenet-22k",
            output_name="beit-base-patch16-224-pt22k-ft22k",
            params_m=102.6,
            expected=Expected((1, 21841), (2.2288, 2.4671, 0.7395), 2397),
        ),
        Variant(
            name="large-ft22k",
            file="beit_large_patch16_224_pt22k_ft22k",
            family=_CLS,
            size="large",
            image_size=224,
            labels="imagenet-22k",
            output_name="beit-large-patch16-224-pt22k-ft22k",
            params_m=325.8,
            expected=Expected((1, 21841), (1.6881, -0.2787, 0.5901), 2396),
        ),
        Variant(
            name="base-ft1k",
            file="beit_base_patch16_224_pt22k_ft1k",
            family=_CLS,
            size="base",
            image_size=224,
            labels="imagenet-1k",
            output_name="beit-base-patch16-224-pt22k-ft1k",
            params_m=86.5,
            expected=Expected((1, 1000), (0.1241, 0.0798, -0.6569), 285),
            reported="ImageNet-1k top-1 83.7% at 224 px",
        ),
        Variant(
            name="large-ft1k",
            file="beit_large_patch16_224_pt22k_ft1k",
            family=_CLS,
            size="large",
            image_size=224,
            labels="imagenet-1k",
            output_name="beit-large-patch16-224-pt22k-ft1k",
            params_m=304.4,
            expected=Expected((1, 1000), (0.4610, -0.0928, 0.2086), 761),
            reported="ImageNet-1k top-1 86.0% at 224 px",
        ),
        Variant(
            name="base-ft22kto1k",
            file="beit_base_patch16_224_pt22k_ft22kto1k",
            family=_CLS,
            size="base",
            image_size=224,
            labels="imagenet-1k",
            output_name="beit-base-patch16-224",
            params_m=86.5,
            expected=Expected((1, 1000), (-1.2385, -1.0987, -1.0108), 281),
            reported="ImageNet-1k top-1 85.2% at 224 px",
        ),
        Variant(
            name="large-ft22kto1k",
            file="beit_large_patch16_224_pt22k_ft22kto1k",
            family=_CLS,
            size="large",
            image_size=224,
            labels="imagenet-1k",
            output_name="beit-large-patch16-224",
            params_m=304.4,
            expected=Expected((1, 1000), (-0.4804, 0.6257, -0.1837), 761),
            reported="ImageNet-1k top-1 87.4% at 224 px",
        ),
        Variant(
            name="base-ft22kto1k-384",
            file="beit_base_patch16_384_pt22k_ft22kto1k",
            family=_CLS,
            size="base",
            image_size=384,
            labels="imagenet-1k",
            output_name="beit-base-patch16-384",
            params_m=86.7,
            expected=Expected((1, 1000), (-1.5303, -0.9484, -0.3147), 761),
            reported="ImageNet-1k top-1 86.8% at 384 px",
        ),
        Variant(
            name="large-ft22kto1k-384",
            file="beit_large_patch16_384_pt22k_ft22kto1k",
            family=_CLS,
            size="large",
            image_size=384,
            labels="imagenet-1k",
            output_name="beit-large-patch16-384",
            params_m=305.0,
            expected=Expected((1, 1000), (-0.5122, 0.5117, -0.2113), 761),
            reported="ImageNet-1k top-1 88.4% at 384 px",
        ),
        Variant(
            name="large-ft22kto1k-512",
            file="beit_large_patch16_512_pt22k_ft22kto1k",
            family=_CLS,
            size="large",
            image_size=512,
            labels="imagenet-1k",
            output_name="beit-large-patch16-512",
            params_m=305.7,
            expected=Expected((1, 1000), (-0.3062, 0.7261, 0.4852), 761),
            reported="ImageNet-1k top-1 88.6% at 512 px",
        ),
        Variant(
            name="base-ade20k",
            file="beit_base_patch16_640_pt22k_ft22ktoade20k",
            family=_SEG,
            size="base",
            image_size=640,
            labels="ade20k-150",
            output_name="beit-base-finetuned-ade-640-640",
            params_m=163.4,
            expected=_ade(_ADE_BASE),
            reported="ADE20K mIoU 53.6 (54.2 multi-scale + flip), sliding-window inference at 640 px",
            normalization="imagenet",
        ),
        Variant(
            name="large-ade20k",
            file="beit_large_patch16_640_pt22k_ft22ktoade20k",
            family=_SEG,
            size="large",
            image_size=640,
            labels="ade20k-150",
            output_name="beit-large-finetuned-ade-640-640",
            params_m=441.3,
            expected=_ade(_ADE_LARGE),
            reported="ADE20K mIoU 56.7 (57.0 multi-scale + flip), sliding-window inference at 640 px",
            normalization="imagenet",
        ),
        Variant(
            name="v2-base-pt1k",
            file="beitv2_base_patch16_224_pt1k",
            family=_MIM,
            size="base",
            image_size=224,
            output_name="beitv2-base-patch16-224-pt1k",
            params_m=92.0,
            positions="shared",
            series="BEiT v2",
            normalization="imagenet",
            mirrors=V2_MIRRORS,
            note="BEiT v2, self-supervised on ImageNet-1k (its cls_pt_layers are pretraining-only)",
        ),
        Variant(
            name="v2-large-pt1k",
            file="beitv2_large_patch16_224_pt1k",
            family=_MIM,
            size="large",
            image_size=224,
            output_name="beitv2-large-patch16-224-pt1k",
            params_m=311.5,
            positions="shared",
            series="BEiT v2",
            normalization="imagenet",
            mirrors=V2_MIRRORS,
            note="BEiT v2, self-supervised on ImageNet-1k (its cls_pt_layers are pretraining-only)",
        ),
        Variant(
            name="v2-base-ft21k",
            file="beitv2_base_patch16_224_pt1k_ft21k",
            family=_CLS,
            size="base",
            image_size=224,
            output_name="beitv2-base-patch16-224-pt1k-ft21k",
            params_m=102.6,
            labels="imagenet-22k",
            series="BEiT v2",
            normalization="imagenet",
            mirrors=V2_MIRRORS,
        ),
        Variant(
            name="v2-large-ft21k",
            file="beitv2_large_patch16_224_pt1k_ft21k",
            family=_CLS,
            size="large",
            image_size=224,
            output_name="beitv2-large-patch16-224-pt1k-ft21k",
            params_m=325.8,
            labels="imagenet-22k",
            series="BEiT v2",
            normalization="imagenet",
            mirrors=V2_MIRRORS,
        ),
        Variant(
            name="v2-base-ft1k",
            file="beitv2_base_patch16_224_pt1k_ft1k",
            family=_CLS,
            size="base",
            image_size=224,
            output_name="beitv2-base-patch16-224-pt1k-ft1k",
            params_m=86.5,
            labels="imagenet-1k",
            series="BEiT v2",
            normalization="imagenet",
            mirrors=V2_MIRRORS,
            reported="ImageNet-1k top-1 85.5% at 224 px",
        ),
        Variant(
            name="v2-large-ft1k",
            file="beitv2_large_patch16_224_pt1k_ft1k",
            family=_CLS,
            size="large",
            image_size=224,
            output_name="beitv2-large-patch16-224-pt1k-ft1k",
            params_m=304.4,
            labels="imagenet-1k",
            series="BEiT v2",
            normalization="imagenet",
            mirrors=V2_MIRRORS,
            reported="ImageNet-1k top-1 87.3% at 224 px",
        ),
        Variant(
            name="v2-base-ft21kto1k",
            file="beitv2_base_patch16_224_pt1k_ft21kto1k",
            family=_CLS,
            size="base",
            image_size=224,
            output_name="beitv2-base-patch16-224-pt1k-ft21kto1k",
            params_m=86.5,
            labels="imagenet-1k",
            series="BEiT v2",
            normalization="imagenet",
            mirrors=V2_MIRRORS,
            reported="ImageNet-1k top-1 86.5% at 224 px",
        ),
        Variant(
            name="v2-large-ft21kto1k",
            file="beitv2_large_patch16_224_pt1k_ft21kto1k",
            family=_CLS,
            size="large",
            image_size=224,
            output_name="beitv2-large-patch16-224-pt1k-ft21kto1k",
            params_m=304.4,
            labels="imagenet-1k",
            series="BEiT v2",
            normalization="imagenet",
            mirrors=V2_MIRRORS,
            reported="ImageNet-1k top-1 88.4% at 224 px",
        ),
        Variant(
            name="v2-base-ade20k",
            file="beitv2_base_patch16_224_pt1k_ftade20k",
            family=_SEG,
            size="base",
            image_size=512,
            output_name="beitv2-base-finetuned-ade-512-512",
            params_m=163.1,
            labels="ade20k-150",
            series="BEiT v2",
            normalization="imagenet",
            mirrors=V2_MIRRORS,
            reported="ADE20K mIoU 53.1, 512 px crops",
        ),
        Variant(
            name="v2-base-ft21k-ade20k",
            file="beitv2_base_patch16_224_pt1k_ft21ktoade20k",
            family=_SEG,
            size="base",
            image_size=512,
            output_name="beitv2-base-pt1k-ft21k-finetuned-ade-512-512",
            params_m=163.1,
            labels="ade20k-150",
            series="BEiT v2",
            normalization="imagenet",
            mirrors=V2_MIRRORS,
            reported="ADE20K mIoU 53.5, 512 px crops",
        ),
        Variant(
            name="v2-large-ade20k",
            file="beitv2_large_patch16_224_pt1k_ftade20k",
            family=_SEG,
            size="large",
            image_size=512,
            output_name="beitv2-large-finetuned-ade-512-512",
            params_m=440.4,
            labels="ade20k-150",
            series="BEiT v2",
            normalization="imagenet",
            mirrors=V2_MIRRORS,
            reported="ADE20K mIoU 56.7, 512 px crops",
        ),
        Variant(
            name="v2-large-ft21k-ade20k",
            file="beitv2_large_patch16_224_pt1k_ft21ktoade20k",
            family=_SEG,
            size="large",
            image_size=512,
            output_name="beitv2-large-pt1k-ft21k-finetuned-ade-512-512",
            params_m=440.4,
            labels="ade20k-150",
            series="BEiT v2",
            normalization="imagenet",
            mirrors=V2_MIRRORS,
            reported="ADE20K mIoU 57.5, 512 px crops",
        ),
        Variant(
            name="dit-base",
            file="dit-base-224-p16-500k-62d53a",
            family=_MIM,
            size="base",
            image_size=224,
            output_name="dit-base",
            params_m=92.1,
            positions="absolute",
            series="DiT",
            mirrors=DIT_PRETRAINED,
            note="DiT, self-supervised on IIT-CDIP document images",
        ),
        Variant(
            name="dit-large",
            file="dit-large-224-p16-500k-d7a2fb",
            family=_MIM,
            size="large",
            image_size=224,
            output_name="dit-large",
            params_m=311.7,
            positions="absolute",
            series="DiT",
            mirrors=DIT_PRETRAINED,
            note="DiT, self-supervised on IIT-CDIP document images",
        ),
        Variant(
            name="dit-base-rvlcdip",
            file="rvlcdip_dit-b",
            family=_CLS,
            size="base",
            image_size=224,
            output_name="dit-base-finetuned-rvlcdip",
            params_m=85.8,
            positions="absolute",
            labels="rvlcdip-16",
            series="DiT",
            mirrors=DIT_FINETUNED,
            reported="RVL-CDIP accuracy 92.11% at 224 px",
        ),
        Variant(
            name="dit-large-rvlcdip",
            file="rvlcdip_dit-l",
            family=_CLS,
            size="large",
            image_size=224,
            output_name="dit-large-finetuned-rvlcdip",
            params_m=303.3,
            positions="absolute",
            labels="rvlcdip-16",
            series="DiT",
            mirrors=DIT_FINETUNED,
            reported="RVL-CDIP accuracy 92.69% at 224 px",
        ),
    )
}
REGISTRY = Registry(VARIANTS)


def variant_by_name(name: str) -> Variant:
    """The registry entry called `name`; an unknown name is a usage error naming the closest ones."""
    return REGISTRY.get(name)
