"""The model card (`README.md`) `push` publishes: metadata from facts in the folder, a body that can be trusted.

Everything comes from what the folder holds (config, image processor, provenance) and from the
verify run that gated the push; nothing is asserted that was not measured or recorded. Metadata goes
through huggingface_hub's `ModelCardData`, so the YAML is what the Hub expects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beit_tools.core.arch import BEIT, FAMILY_OF_CLASS, FLAVORS, Family
from beit_tools.core.variants import COCO_CATS, VARIANTS, Variant

# Label set -> Hub dataset id.
DATASETS = {
    "imagenet-1k": "imagenet-1k",
    "imagenet-22k": "imagenet-21k",
    "ade20k-150": "scene_parse_150",
    "rvlcdip-16": "aharley/rvl_cdip",
}
# Pretraining data of the self-supervised official files (they have no label set).
PRETRAINING_DATA = {
    "base-pt22k": "imagenet-21k",
    "large-pt22k": "imagenet-21k",
    "base-pt1k-800ep": "imagenet-1k",
    "v2-base-pt1k": "imagenet-1k",
    "v2-large-pt1k": "imagenet-1k",
}
SERIES_TAGS = {"BEiT": "beit", "BEiT v2": "beit-v2", "DiT": "dit"}
PIPELINES = {Family.CLASSIFICATION: "image-classification", Family.SEGMENTATION: "image-segmentation"}
OFFICIAL_LICENSE = "mit"  # microsoft/unilm, which released the official files
RESAMPLE_NAMES = {2: "bilinear", 3: "bicubic"}  # PIL's codes, as preprocessor_config.json stores them
TEMPLATE = "---\n{{ card_data }}\n---\n\n{{ body }}\n"
CATS_URL = COCO_CATS  # the image the classification logits are published for
ADE_URL = "https://huggingface.co/datasets/hf-internal-testing/fixtures_ade20k/resolve/main/ADE_val_00000001.jpg"

# The papers behind each series, cited beside BEiT's.
SERIES_CITATIONS = {
    "BEiT v2": """@article{peng2022beitv2,
  title   = {{BEiT v2}: Masked Image Modeling with Vector-Quantized Visual Tokenizers},
  author  = {Zhiliang Peng and Li Dong and Hangbo Bao and Qixiang Ye and Furu Wei},
  year    = {2022},
  eprint  = {2208.06366},
  archivePrefix = {arXiv}
}""",
    "DiT": """@misc{li2022dit,
  title   = {{DiT}: Self-supervised Pre-training for Document Image Transformer},
  author  = {Junlong Li and Yiheng Xu and Tengchao Lv and Lei Cui and Cha Zhang and Furu Wei},
  year    = {2022},
  eprint  = {2203.02378},
  archivePrefix = {arXiv}
}""",
}
CITATION = """```bibtex
@inproceedings{bao2022beit,
  title     = {{BEiT}: {BERT} Pre-Training of Image Transformers},
  author    = {Hangbo Bao and Li Dong and Songhao Piao and Furu Wei},
  booktitle = {International Conference on Learning Representations},
  year      = {2022},
  eprint    = {2106.08254},
  archivePrefix = {arXiv}
}
```"""

# Per family: (the example image, what the snippet does with the model and the image).
USAGE: dict[Family, tuple[str, str]] = {
    Family.CLASSIFICATION: (
        CATS_URL,
        """with torch.no_grad():
    logits = model(**processor(images=image, return_tensors="pt")).logits
print(model.config.id2label[logits.argmax(-1).item()])""",
    ),
    Family.SEGMENTATION: (
        ADE_URL,
        """inputs = processor(images=image, return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs)
segmentation = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]
print(segmentation.shape, [model.config.id2label[int(i)] for i in segmentation.unique()][:5])""",
    ),
    Family.MIM: (
        CATS_URL,
        """pixel_values = processor(images=image, return_tensors="pt").pixel_values
patches = (model.config.image_size // model.config.patch_size) ** 2
bool_masked_pos = torch.rand(1, patches) < 0.4  # hide 40% of the patches
with torch.no_grad():
    logits = model(pixel_values, bool_masked_pos=bool_masked_pos).logits
print(logits.shape)  # a distribution over the visual-token vocabulary for every patch""",
    ),
}


@dataclass(frozen=True)
class Folder:
    """What a converted folder says about itself."""

    path: Path
    config: dict[str, Any]
    processor: dict[str, Any]
    provenance: dict[str, Any] | None

    @classmethod
    def read(cls, path: Path) -> Folder:
        def load(name: str) -> dict[str, Any] | None:
            file = path / name
            return json.loads(file.read_text()) if file.exists() else None

        return cls(path, load("config.json") or {}, load("preprocessor_config.json") or {}, load("provenance.json"))

    @property
    def hf_class(self) -> str:
        return (self.config.get("architectures") or ["BeitForImageClassification"])[0]

    @property
    def family(self) -> Family:
        return FAMILY_OF_CLASS.get(self.hf_class, Family.CLASSIFICATION)

    @property
    def variant(self) -> Variant | None:
        return VARIANTS.get(str((self.provenance or {}).get("variant")))

    @property
    def label_set(self) -> str | None:
        if self.variant is not None:
            return self.variant.labels
        return ((self.provenance or {}).get("labels") or {}).get("set")

    @property
    def dataset(self) -> str | None:
        """The Hub dataset the head was trained on (or, for pretrained files, the pretraining data)."""
        return DATASETS.get(self.label_set or "") or PRETRAINING_DATA.get(self.variant.name if self.variant else "")


@dataclass(frozen=True)
class CardRequest:
    repo_id: str
    license: str | None = None  # --license; official variants default to MIT
    checks: list[dict[str, Any]] | None = None  # the gate's verify checks; None when it was skipped
    versions: dict[str, str] | None = None
    date: str = ""


def card_license(folder: Folder, requested: str | None) -> str | None:
    return requested or (OFFICIAL_LICENSE if folder.variant is not None else None)


def card_data(folder: Folder, request: CardRequest) -> Any:
    from huggingface_hub import ModelCardData

    family = folder.family
    dataset = folder.dataset
    tags = ["beit", family.value, "vision"]
    series = SERIES_TAGS.get(folder.variant.series if folder.variant else "BEiT", "beit")
    if series != "beit":
        tags.insert(1, series)
    if dataset:
        tags.append(dataset)
    return ModelCardData(
        license=card_license(folder, request.license),
        library_name="transformers",
        pipeline_tag=PIPELINES.get(family),
        tags=tags,
        datasets=[dataset] if dataset else None,
        model_name=request.repo_id.split("/")[-1],
    )


def model_card(folder: Folder, request: CardRequest) -> Any:
    """A huggingface_hub ModelCard for `folder`, published as `request.repo_id`."""
    from huggingface_hub import ModelCard

    body = "\n\n".join(
        part
        for part in (
            _summary(folder, request),
            _source(folder),
            _usage(folder, request.repo_id),
            _preprocessing(folder),
            _verification(request),
            _deviations(folder, request),
            _citation(folder),
        )
        if part
    )
    return ModelCard.from_template(card_data(folder, request), template_str=TEMPLATE, body=body)


def _summary(folder: Folder, request: CardRequest) -> str:
    c, family = folder.config, folder.family
    variant = folder.variant
    what = {
        Family.CLASSIFICATION: f"an image classifier over {c.get('num_labels', len(c.get('id2label', {})))} classes",
        Family.SEGMENTATION: f"a UperNet semantic segmentation model over {len(c.get('id2label', {}))} classes",
        Family.MIM: "a self-supervised model that predicts visual tokens of masked patches (masked image modeling)",
    }[family]
    positions = (
        "shared relative position bias"
        if c.get("use_shared_relative_position_bias")
        else "relative position bias per layer"
        if c.get("use_relative_position_bias")
        else "absolute position embeddings"
    )
    lines = [
        f"# {request.repo_id.split('/')[-1]}",
        "",
        f"BEiT ({folder.hf_class}): {what}, converted from an original Microsoft unilm checkpoint "
        "into a Hugging Face transformers model with beit-tools. It loads in stock transformers with no "
        "missing, unexpected or mismatched keys.",
        "",
        f"- Architecture: {c.get('num_hidden_layers')} layers, hidden size {c.get('hidden_size')}, "
        f"{c.get('num_attention_heads')} heads, patch {c.get('patch_size')}, {c.get('image_size')}×"
        f"{c.get('image_size')} input, {positions}" + (", layer scale" if c.get("layer_scale_init_value") else ""),
    ]
    if variant is not None:
        lines.append(f"- Official checkpoint: `{variant.name}` ({variant.note or variant.family.value})")
        if variant.reported:
            lines.append(f"- Reported by the original authors (not re-measured here): {variant.reported}")
    return "\n".join(lines)


def _source(folder: Folder) -> str:
    prov = folder.provenance
    if prov is None:
        return "## Source\n\nThe folder has no provenance record: its source cannot be traced."
    source = prov.get("source", {})
    rows = [("file", f"`{Path(str(source.get('path', '?'))).name}`")]
    if folder.variant is not None:
        rows.append(("variant", f"`{folder.variant.name}`"))
    if source.get("url"):
        rows.append(("downloaded from", source["url"]))
    hub = source.get("hub")
    if hub:
        rows.append(("Hub source", f"`{hub['repo_id']}` {hub['filename']} at {hub.get('commit') or hub['revision']}"))
    rows += [
        ("sha256", f"`{source.get('sha256')}`"),
        ("weights from", f"`{source.get('weights_from')}`"),
        ("converted", f"{prov.get('created', '')} with beit-tools {prov.get('versions', {}).get('beit_tools', '')}"),
        ("dtype", str(prov.get("dtype", ""))),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"## Source\n\n| | |\n| --- | --- |\n{table}"


def usage_snippet(family: Family, repo_id: str, hf_class: str | None = None) -> str:
    """Python that runs as written against the published repo (it downloads one example image)."""
    image_url, use = USAGE[family]
    cls = hf_class or FLAVORS[BEIT].classes[family]
    return (
        "import torch\n"
        f"from transformers import AutoImageProcessor, {cls}\n"
        "from transformers.image_utils import load_image\n\n"
        f'image = load_image("{image_url}")\n'
        f'processor = AutoImageProcessor.from_pretrained("{repo_id}")\n'
        f'model = {cls}.from_pretrained("{repo_id}").eval()\n'
        f"{use}\n"
    )


def _usage(folder: Folder, repo_id: str) -> str:
    return f"## How to use\n\n```python\n{usage_snippet(folder.family, repo_id, folder.hf_class)}```"


def _preprocessing(folder: Folder) -> str:
    p = folder.processor
    size = p.get("size", {})
    mean, std = p.get("image_mean"), p.get("image_std")
    if mean == [0.5, 0.5, 0.5] and std == [0.5, 0.5, 0.5]:
        why = "mean = std = 0.5 per channel, the normalisation the original BEiT pretraining and fine-tuning used"
    else:
        why = f"mean {mean}, std {std} (ImageNet statistics, as the original training of this model)"
    lines = [
        "## Preprocessing",
        "",
        f"The saved image processor resizes to {size.get('height')}×{size.get('width')} "
        f"({RESAMPLE_NAMES.get(p.get('resample'), 'resample ' + str(p.get('resample')))}, no crop), "
        f"scales to [0, 1] and normalises with {why}.",
    ]
    if p.get("do_reduce_labels"):
        lines.append(
            "Segmentation maps are label-reduced (`do_reduce_labels=True`): ADE20K's 0 ('other') becomes 255 "
            "and the 150 classes shift down by one, as mmseg's `reduce_zero_label` trained them."
        )
    return "\n".join(lines)


def _verification(request: CardRequest) -> str:
    if request.checks is None:
        return (
            "## Verification\n\n**This folder was published without verification** (`--skip-verify`): none of "
            "beit-tools' load, forward or parity checks were run on it before publishing."
        )
    rows = "\n".join(
        "| " + " | ".join(_cell(c.get(k, "")) for k in ("name", "status", "measured", "bound", "detail")) + " |"
        for c in request.checks
    )
    versions = ", ".join(f"{k} {v}" for k, v in (request.versions or {}).items())
    return (
        "## Verification\n\n"
        f"`beit-tools verify` ran on this folder before it was published ({request.date}; {versions}). "
        "Parity compares the outputs of transformers with an independent implementation of the original "
        "architecture run on the source checkpoint's tensors.\n\n"
        "| check | status | measured | bound | detail |\n| --- | --- | --- | --- | --- |\n" + rows
    )


def _citation(folder: Folder) -> str:
    extra = SERIES_CITATIONS.get(folder.variant.series if folder.variant else "")
    text = CITATION if extra is None else CITATION.replace("```bibtex\n", f"```bibtex\n{extra}\n\n")
    return "## Citation\n\n" + text


def _cell(value: object) -> str:
    """Text for a Markdown table cell: a `|` inside would end the cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _deviations(folder: Folder, request: CardRequest) -> str:
    items = []
    prov = folder.provenance or {}
    if folder.family is Family.SEGMENTATION:
        features = prov.get("features") or {}
        if features.get("faithful"):
            added = features.get("added_layers", 0)
            items.append(
                "None in the segmentation itself: `out_indices` "
                f"{features.get('out_indices')} make stock transformers feed its FPN the outputs of the original's "
                f"blocks {features.get('original')}"
                + (
                    f", with {added} added pass-through layer(s) whose zero weights are computed but never used."
                    if added
                    else "."
                )
            )
        else:
            check = next((c for c in request.checks or [] if c["name"] == "parity: logits"), None)
            measured = f" (measured before publishing: {check['measured']})" if check and check["measured"] else ""
            items.append(
                "transformers' `BeitForSemanticSegmentation` feeds its FPN with `hidden_states[j-1]` for j in "
                "`out_indices`, the original with the output of block j: the weights are exact, the segmentation "
                f"follows transformers' reading{measured}. `beit-tools convert` writes the faithful layout by default."
            )
        items.append(
            "mmseg evaluated ADE20K with sliding-window inference (640×640 crops, stride 426); this model, run "
            "through the image processor, sees one image resized to the model's size."
        )
    if str(prov.get("dtype")) in ("float16", "bfloat16"):
        items.append(f"The weights are {prov.get('dtype')}: outputs match the original only to half precision.")
    if not items:
        return ""
    return "## Known deviations\n\n" + "\n".join(f"- {item}" for item in items)
