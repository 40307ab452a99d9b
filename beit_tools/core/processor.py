"""preprocessor_config.json for the converted model, written as the hub's BEiT models have it.

Classification and pretraining: resize to the model size (bilinear, no crop), mean = std = 0.5, as the
official microsoft/beit-* models and the original fine-tuning. ADE20K segmentation: mmseg's training
normalisation (ImageNet mean/std) and reduced labels (0 = "other" becomes 255, classes shift down by one).
"""

from __future__ import annotations

from typing import Any

from beit_tools.core.arch import Arch, Family

BILINEAR = 2  # PIL.Image.BILINEAR
HALF = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # mmseg's (123.675, 116.28, 103.53) / 255
IMAGENET_STD = (0.229, 0.224, 0.225)  # mmseg's (58.395, 57.12, 57.375) / 255

# family -> (mean, std, reduce labels)
NORMALISATION = {
    Family.CLASSIFICATION: (HALF, HALF, False),
    Family.MIM: (HALF, HALF, False),
    Family.SEGMENTATION: (IMAGENET_MEAN, IMAGENET_STD, True),
}


def preprocessor_config(arch: Arch) -> dict[str, Any]:
    mean, std, reduce_labels = NORMALISATION[arch.family]
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
        "do_reduce_labels": reduce_labels,
    }
