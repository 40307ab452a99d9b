"""preprocessor_config.json for the converted model, written as the hub's BEiT models have it.

Resize to the model size (bilinear, no crop), scale to [0, 1], and normalise the way the model was
trained (`Arch.normalization`: mean = std = 0.5 for BEiT v1, ImageNet's statistics for BEiT v2,
ImageNet-1k pretraining and mmseg's ADE20K training). Segmentation also reduces labels (0 = "other"
becomes 255, the classes shift down by one), as mmseg's `reduce_zero_label` did.
"""

from __future__ import annotations

from typing import Any

from beit_tools.core.arch import NORMALIZATIONS, Arch, Family

BILINEAR = 2  # PIL.Image.BILINEAR


def preprocessor_config(arch: Arch) -> dict[str, Any]:
    mean, std = NORMALIZATIONS[arch.normalization]
    size = {"height": arch.image_size, "width": arch.image_size}
    return {
        "image_processor_type": "BeitImageProcessor",
        "do_resize": True,
        "size": size,
        "resample": BILINEAR,
        "do_center_crop": False,
        "crop_size": size,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(mean),
        "image_std": list(std),
        "do_reduce_labels": arch.family is Family.SEGMENTATION,
    }
