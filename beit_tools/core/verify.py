"""`verify`: prove a converted folder right, with checks that can fail.

Structure: the files are there, readable, agree with the config and load into transformers cleanly.
Function: a forward pass with the saved image processor gives finite outputs and predictions.
Expected logits: official checkpoints give the logits they are known to give.
Parity (`against`): the original architecture, run by `reference.py` on the source's raw tensors,
computes what transformers computes from the folder, layer by layer. Round trip (`against`): every
written tensor equals its source tensor after the documented split/rename and cast.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from beit_tools.core.arch import BEIT, FAMILY_OF_CLASS, FLAVORS, LAYER_NORM_EPS, Arch, Family
from beit_tools.core.dtypes import FLOAT32, HALF, dtype_name
from beit_tools.core.features import TRANSFORMERS, FeatureLayout, capture_fpn_inputs, run_fpn
from beit_tools.core.provenance import PROVENANCE_NAME
from beit_tools.core.variants import ATOL as VARIANT_ATOL
from beit_tools.core.variants import Variant, variant_by_name
from beit_tools.core.writer import INDEX_NAME, WEIGHTS_NAME
from beit_tools.errors import BeitToolsError

FP32_ATOL = 1e-4
HALF_ATOL = 1e-2  # weights rounded to 16 bits move outputs by about 1e-3
PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"


@dataclass
class Check:
    name: str
    status: str
    measured: str = ""
    bound: str = ""
    detail: str = ""


@dataclass
class LayerDiff:
    layer: str
    max_abs: float


@dataclass
class Prediction:
    index: int
    label: str
    score: float


@dataclass
class VerifyResult:
    output: Path
    checks: list[Check] = field(default_factory=list)
    layers: list[LayerDiff] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    prediction_kind: str = ""
    provenance: dict[str, Any] | None = None
    picture: Path | None = None

    @property
    def passed(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def add(self, name: str, ok: bool, measured: str = "", bound: str = "", detail: str = "") -> bool:
        self.checks.append(Check(name, PASS if ok else FAIL, measured, bound, detail))
        return ok

    def within(self, name: str, delta: float, atol: float, bound: str, detail: str) -> bool:
        return self.add(name, delta <= atol, measured=f"max |Δ| {delta:.2e}", bound=bound, detail=detail)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "output": str(self.output),
            "checks": [asdict(c) for c in self.checks],
            "layers": [asdict(layer) for layer in self.layers],
            "predictions": {"kind": self.prediction_kind, "top": [asdict(p) for p in self.predictions]},
            "picture": str(self.picture) if self.picture else None,
        }


@dataclass
class VerifyOptions:
    output: Path
    against: Path | None = None
    image: Path | None = None
    top: int = 5
    variant: str | None = None
    atol: float | None = None
    strict: bool = False
    save_visual: Path | None = None
    trust_checkpoint: bool = False
    cache_dir: Path | None = None  # where test images are cached
    offline: bool = False


# --- structure -----------------------------------------------------------------------------------


def weight_files(out: Path) -> list[Path]:
    if (out / INDEX_NAME).exists():
        index = json.loads((out / INDEX_NAME).read_text())
        return [out / name for name in sorted(set(index["weight_map"].values()))]
    return [out / WEIGHTS_NAME]


def read_headers(files: list[Path]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Key -> (shape, dtype) from safetensors headers, validating each file as safetensors does."""
    from safetensors import safe_open

    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            names = f.keys()
            for key in names:
                sl = f.get_slice(key)
                out[key] = (tuple(sl.get_shape()), sl.get_dtype())
    return out


class Written(Mapping[str, torch.Tensor]):
    """The folder's tensors by name, each read from its safetensors file when asked (never all held)."""

    def __init__(self, files: list[Path]) -> None:
        from beit_tools.core.checkpoint import open_checkpoint

        self.files = [open_checkpoint(path) for path in files]
        self.where = {stored: (f, c) for f in self.files for c, stored in f.source_keys.items()}

    def info(self, key: str) -> Any:
        f, canonical = self.where[key]
        return f.infos[canonical]

    def __getitem__(self, key: str) -> torch.Tensor:
        f, canonical = self.where[key]
        return f.tensor(canonical)

    def __iter__(self):
        return iter(self.where)

    def __len__(self) -> int:
        return len(self.where)

    def scan(self) -> Callable[[], list[str]]:
        """Start reading every file on threads; the returned call waits and names the tensors with NaN/Inf."""
        from beit_tools.core.scan import SourceScan, regions_of

        scans = [(f, SourceScan(f.path, regions_of(f)).start()) for f in self.files]
        return lambda: [f.source_keys[k] for f, scan in scans for k in scan.result()[1]]


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def check_structure(result: VerifyResult, out: Path) -> tuple[Any, Written] | None:
    """Files, headers, config and transformers load. Returns (model, written tensors) or None when it cannot load."""
    from transformers import AutoConfig

    from beit_tools.core.schema import schema_problems, target_schema

    missing = [n for n in ("config.json", "preprocessor_config.json") if not (out / n).exists()]
    files = weight_files(out)
    missing += [p.name for p in files if not p.exists()]
    if not result.add("files", not missing, detail=f"missing: {', '.join(missing)}" if missing else "all present"):
        return None
    try:
        headers = read_headers(files)
    except Exception as e:  # safetensors raises its own error types for damaged files
        result.add(
            "weights readable",
            False,
            detail=f"{files[0].name if len(files) == 1 else 'a shard'} is damaged: {str(e).splitlines()[0]}",
        )
        return None
    result.add("weights readable", True, measured=f"{len(headers)} tensors in {len(files)} file(s)")
    try:
        config = AutoConfig.from_pretrained(out)
    except Exception as e:
        result.add("config", False, detail=f"config.json does not load: {str(e).splitlines()[0]}")
        return None
    problems = schema_problems({k: v[0] for k, v in headers.items()}, target_schema(config))
    result.add(
        "config ↔ weights", not problems, detail="; ".join(problems) or "every tensor the config needs, shaped right"
    )
    eps = config.layer_norm_eps
    result.add(
        "layer norm eps",
        eps == LAYER_NORM_EPS,
        measured=f"{eps:g}",
        bound=f"{LAYER_NORM_EPS:g}",
        detail="" if eps == LAYER_NORM_EPS else "BEiT normalises with eps 1e-6; outputs drift with another eps",
    )
    processor = json.loads((out / "preprocessor_config.json").read_text())
    size = processor.get("size", {})
    side = size.get("height", size.get("shortest_edge")) if isinstance(size, dict) else size
    result.add(
        "processor size",
        side == config.image_size,
        measured=str(side),
        bound=str(config.image_size),
        detail="" if side == config.image_size else "the processor resizes to a size the model was not built for",
    )

    import transformers

    weights = Written(files)
    scanned = weights.scan()  # reads the files while transformers loads the model
    cls = getattr(transformers, (config.architectures or ["BeitModel"])[0])
    try:
        model, info = cls.from_pretrained(out, output_loading_info=True, dtype=torch.float32)
    except Exception as e:
        result.add("transformers load", False, detail=str(e).strip().splitlines()[0])
        return None
    bad = {k: sorted(info[k]) for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info[k]}
    detail = "; ".join(f"{len(v)} {k.replace('_', ' ')}: {', '.join(map(str, v[:3]))}" for k, v in bad.items())
    if not result.add(
        "transformers load", not bad, measured=cls.__name__, detail=detail or "0 missing, 0 unexpected, 0 mismatched"
    ):
        return None
    infos = [weights.info(k) for k in weights]
    dtypes = sorted({i.dtype.name for i in infos if i.dtype.is_floating_point})
    params = sum(i.numel for i in infos if i.dtype.is_floating_point)
    declared = dtype_name(config.dtype) if getattr(config, "dtype", None) else None
    consistent = len(dtypes) == 1 and declared in (None, dtypes[0])
    result.add(
        "parameters",
        consistent,
        measured=f"{params / 1e6:.2f}M, {'/'.join(dtypes)}",
        bound=f"one dtype = config's {declared}" if declared else "one dtype",
        detail="" if consistent else "the weights' dtypes disagree with each other or with config.json",
    )
    nonfinite = scanned()
    result.add(
        "finite weights", not nonfinite, measured=f"{len(nonfinite)} with NaN/Inf", detail=", ".join(nonfinite[:4])
    )
    return model.eval(), weights


def load_provenance(out: Path) -> tuple[dict[str, Any] | None, str | None]:
    """provenance.json's content, or why it cannot be read (None, None when there is none)."""
    path = out / PROVENANCE_NAME
    if not path.exists():
        return None, None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data.get("source"), dict):
            raise KeyError("source")
    except (json.JSONDecodeError, KeyError, AttributeError) as e:
        return None, f"provenance.json is unreadable ({type(e).__name__})"
    return data, None


def check_provenance(result: VerifyResult, out: Path, against: Any | None) -> None:
    """Show where the folder came from; with `against` (a running SourceScan of it), require that file to be
    the recorded source."""
    data, problem = load_provenance(out)
    if problem:
        result.add("provenance", False, detail=problem)
        return
    if data is None:
        result.checks.append(Check("provenance", WARN, detail="no provenance.json: the source cannot be traced"))
        return
    source, versions = data["source"], data.get("versions", {})
    recorded = str(source.get("sha256"))
    traced = (
        f"from {Path(str(source.get('path') or source.get('url'))).name}, {str(data.get('created'))[:10]}, "
        f"beit-tools {versions.get('beit_tools')}, transformers {versions.get('transformers')}"
    )
    if against is None:
        result.add("provenance", True, measured=f"sha256 {recorded[:12]}…", detail=traced)
        return
    actual = against.result()[0]
    same = actual == recorded
    detail = (
        f"--against is the recorded source: {traced}" if same else "--against is not the file this was converted from"
    )
    result.add("provenance", same, measured=f"sha256 {actual[:12]}…", bound=f"sha256 {recorded[:12]}…", detail=detail)


# --- function ------------------------------------------------------------------------------------


def load_image(path: Path | None, size: int) -> Any:
    from PIL import Image, UnidentifiedImageError

    from beit_tools.core.visual import synthetic_image

    if path is None:
        return synthetic_image(size)
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise BeitToolsError(f"cannot read image {path}: {e}", "give a JPEG or PNG file") from e


def check_function(result: VerifyResult, model: Any, out: Path, options: VerifyOptions) -> torch.Tensor:
    """Forward the image through the saved processor; returns the pixel values used."""
    from transformers import AutoImageProcessor

    config = model.config
    processor = AutoImageProcessor.from_pretrained(out)
    image = load_image(options.image, config.image_size)
    pixels = processor(images=image, return_tensors="pt")["pixel_values"].float()
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    finite = bool(torch.isfinite(logits).all())
    source = options.image.name if options.image else "synthetic image"
    result.add(
        "forward",
        finite,
        measured=f"logits {list(logits.shape)} on {source}",
        detail="" if finite else "the outputs hold NaN or Inf",
    )
    _predictions(result, config, logits[0], options.top)
    path = options.save_visual
    if path is None and options.image is not None and logits.dim() == 4:  # a segmentation of the user's image
        path = Path(f"{options.image.stem}.segmentation.png")
    if path is not None:
        _save_visual(result, config, image, logits[0], path)
    return pixels


def _predictions(result: VerifyResult, config: Any, logits: torch.Tensor, top: int) -> None:
    if logits.dim() == 1:  # classification
        probs = logits.softmax(-1)
        values, indices = probs.topk(min(top, probs.numel()))
        result.prediction_kind = "classes (probability)"
        names = [config.id2label.get(int(i), str(int(i))) for i in indices]
    else:
        counts = torch.bincount(
            logits.argmax(0 if logits.dim() == 3 else -1).reshape(-1),
            minlength=logits.shape[0 if logits.dim() == 3 else -1],
        )
        values, indices = (counts.float() / counts.sum()).topk(min(top, counts.numel()))
        if logits.dim() == 3:  # segmentation [K, H, W]
            result.prediction_kind = "classes (share of pixels)"
            names = [config.id2label.get(int(i), str(int(i))) for i in indices]
        else:  # MIM [patches, V]
            result.prediction_kind = "visual tokens (share of patches)"
            names = [f"token {int(i)}" for i in indices]
    result.predictions = [Prediction(int(i), n, float(v)) for i, n, v in zip(indices, names, values, strict=True)]


def _save_visual(result: VerifyResult, config: Any, image: Any, logits: torch.Tensor, path: Path) -> None:
    from beit_tools.core.visual import bars_picture, panel_size, segmentation_overlay

    if logits.dim() == 3:  # [K, h, w]: upsampled to the picture, one class per pixel
        width, height = panel_size(image)
        scaled = torch.nn.functional.interpolate(logits[None], size=(height, width), mode="bilinear")[0]
        names = {int(k): v for k, v in config.id2label.items()}
        segmentation_overlay(image, scaled.argmax(0).tolist(), names, path)
    else:
        bars_picture([(p.label, p.score) for p in result.predictions], result.prediction_kind, path)
    result.picture = path


# --- expected logits -----------------------------------------------------------------------------


def seed_pixels(image: Any, size: int, resample: str = "bilinear") -> torch.Tensor:
    """The original conversion's preprocessing: resize (no crop), scale to [0, 1], mean = std = 0.5."""
    from PIL import Image

    method = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[resample]
    resized = image.convert("RGB").resize((size, size), method)
    data = torch.frombuffer(bytearray(resized.tobytes()), dtype=torch.uint8)
    x = data.reshape(size, size, 3).permute(2, 0, 1).float() / 255.0
    return ((x - 0.5) / 0.5).unsqueeze(0)


def check_expected(
    result: VerifyResult,
    model: Any,
    variant: Variant,
    options: VerifyOptions,
    layout: FeatureLayout | None,
    explicit: bool,
) -> None:
    """The logits the official checkpoint is known to give on its test image (fetched and cached when needed).

    The ADE20K numbers were produced by the Hub's models, i.e. with transformers' feature reading: they
    are compared with that reading computed from this folder's weights, and the faithful logits are
    reported beside them.
    """
    from beit_tools.core.sources import fetch_test_image

    name = f"expected logits ({variant.name})"
    expected = variant.expected
    if expected is None:
        result.checks.append(Check(name, SKIP, detail="no logits are published for this checkpoint"))
        return
    try:
        image_path = options.image or fetch_test_image(
            expected.image, cache_dir=options.cache_dir, offline=options.offline
        )
    except BeitToolsError as e:
        detail = f"{e.message}; give {expected.image.name} with --image"
        result.checks.append(Check(name, FAIL if explicit else SKIP, detail=detail))
        return
    image = load_image(image_path, variant.image_size)
    pixels = seed_pixels(image, variant.image_size, expected.resample)
    with torch.no_grad():
        outputs = model(pixel_values=pixels, output_hidden_states=True)
    logits, faithful_note = outputs.logits, ""
    if layout is not None and layout.faithful:
        hub_states = [i + layout.offset for i in layout.original]  # what the Hub's config makes transformers read
        logits = segmentation_logits(model, outputs.hidden_states, hub_states)
        faithful = [round(v, 4) for v in outputs.logits[0, 0, 0, :3].tolist()]
        faithful_note = f"; Hub reading compared; this folder's faithful logits start {faithful}"
    if tuple(logits.shape) != expected.shape:
        result.add(name, False, measured=f"shape {list(logits.shape)}", bound=f"shape {list(expected.shape)}")
        return
    if expected.first is None:
        result.add(name, True, measured=f"shape {list(logits.shape)}", bound="shape only (no published logits)")
        return
    want = torch.tensor(expected.first)
    got = logits[0, :3] if want.dim() == 1 else logits[0, :3, :3, :3]
    delta = _max_abs(got, want)
    ok = delta <= VARIANT_ATOL
    detail = f"first logits {[round(v, 4) for v in got.reshape(-1)[:3].tolist()]} on {expected.image.name}"
    if expected.top_class is not None:
        predicted = int(logits.argmax(-1).item())
        ok = ok and predicted == expected.top_class
        detail += f"; class {predicted} (expected {expected.top_class})"
    result.add(name, ok, measured=f"max |Δ| {delta:.2e}", bound=f"{VARIANT_ATOL:g}", detail=detail + faithful_note)


def segmentation_logits(model: Any, hidden_states: Any, states: list[int]) -> torch.Tensor:
    """The decode head's logits when the FPN is fed hidden_states[k] for k in `states`."""
    batch, tokens, dim = hidden_states[0].shape
    side = round((tokens - 1) ** 0.5)
    maps = tuple(hidden_states[k][:, 1:].transpose(1, 2).reshape(batch, dim, side, side) for k in states)
    with torch.no_grad():
        return model.decode_head(run_fpn(model, maps))


# --- parity and round trip -----------------------------------------------------------------------


def analyse_source(options: VerifyOptions, provenance: dict[str, Any] | None) -> Any:
    """Open `--against` as convert did (same container, same overrides); refuse a source convert would refuse."""
    from beit_tools.core.analysis import analyse, stated

    prov = provenance or {}
    overrides = prov.get("overrides") or {}
    analysis = analyse(
        options.against,
        trust_checkpoint=options.trust_checkpoint,
        use_ema=(prov.get("source") or {}).get("weights_from") == "model_ema",
        image_size=overrides.get("image_size"),
        num_heads=overrides.get("num_heads"),
        pool_scales=tuple(overrides["pool_scales"]) if overrides.get("pool_scales") else None,
        feature_indices=(prov.get("features") or {}).get("kind", TRANSFORMERS),
        known=stated(prov.get("flavor"), prov.get("normalization")),
    )
    analysis.plan.require_convertible(allow_unused=True, context=f"--against {options.against}: ")
    return analysis


class LazySource(Mapping[str, torch.Tensor]):
    """A checkpoint's tensors by canonical name, read when used."""

    def __init__(self, checkpoint: Any) -> None:
        self.checkpoint = checkpoint

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.checkpoint.tensor(key)

    def __iter__(self):
        return iter(self.checkpoint.infos)

    def __len__(self) -> int:
        return len(self.checkpoint.infos)


def check_parity(
    result: VerifyResult,
    model: Any,
    weights: Written,
    pixels: torch.Tensor,
    analysis: Any,
    options: VerifyOptions,
    layout: FeatureLayout | None,
) -> None:
    from beit_tools.core.reference import reference_forward

    arch = analysis.detection.arch
    source = LazySource(analysis.checkpoint)
    dtypes = [weights.info(k).dtype for k in weights] + [i.dtype for i in analysis.checkpoint.infos.values()]
    half = any(d in HALF for d in dtypes)
    atol = options.atol if options.atol is not None else (HALF_ATOL if half else FP32_ATOL)
    bound = f"{atol:g}" + (" (half precision)" if half and options.atol is None else "")
    if pixels.shape[-1] != arch.image_size:
        result.add(
            "parity", False, detail=f"the source is built for {arch.image_size}px, the folder for {pixels.shape[-1]}px"
        )
        return
    reference = reference_forward(source, arch, pixels)
    captured: list[torch.Tensor] = []
    hooks = capture_fpn_inputs(model, captured) if arch.family is Family.SEGMENTATION else []
    with torch.no_grad():
        outputs = model(pixel_values=pixels, output_hidden_states=True)
    for hook in hooks:
        hook.remove()
    names = ["embeddings", *(f"block {i}" for i in range(arch.num_hidden_layers))]
    original_states = outputs.hidden_states[: arch.num_hidden_layers + 1]  # added pass-through layers are not compared
    result.layers = [
        LayerDiff(name, _max_abs(ours, original))
        for name, ours, original in zip(names, original_states, reference.hidden_states, strict=True)
    ]
    worst = max(result.layers, key=lambda d: d.max_abs)
    first_bad = next((d.layer for d in result.layers if d.max_abs > atol), None)
    extra = len(outputs.hidden_states) - len(original_states)
    result.add(
        "parity: hidden states",
        first_bad is None,
        measured=f"max |Δ| {worst.max_abs:.2e} ({worst.layer})",
        bound=bound,
        detail=(f"first exceeds the bound at {first_bad}" if first_bad else "every layer within bound")
        + (f"; {extra} added pass-through layer(s) not compared (their output is never used)" if extra else ""),
    )
    if arch.family is not Family.SEGMENTATION or layout is None:
        delta = _max_abs(outputs.logits, reference.logits)
        result.within("parity: logits", delta, atol, bound, f"{arch.hf_class} vs the original on the source")
        return
    _segmentation_parity(result, model, outputs, captured, reference, arch, layout, atol, bound, options.strict)


def _segmentation_parity(
    result: VerifyResult,
    model: Any,
    outputs: Any,
    captured: list[torch.Tensor],
    reference: Any,
    arch: Arch,
    layout: FeatureLayout,
    atol: float,
    bound: str,
    strict: bool,
) -> None:
    """The head on the original's features; then what transformers itself feeds the FPN, and its logits.

    A difference explained by the folder's layout (the Hub's transformers numbering) is a warning, or a
    failure with --strict; any other difference fails.
    """
    from beit_tools.core.reference import token_maps

    original_maps = token_maps(reference.hidden_states, arch)
    if captured:
        with torch.no_grad():
            head_logits = model.decode_head(run_fpn(model, token_maps(list(outputs.hidden_states), arch)))
        detail = f"FPN + UperHead on the outputs of blocks {list(arch.out_indices)}, as the original"
        result.within("parity: decode head", _max_abs(head_logits, reference.logits), atol, bound, detail)
        features = max(_max_abs(ours, theirs) for ours, theirs in zip(captured, original_maps, strict=True))
    else:
        result.checks.append(Check("parity: decode head", SKIP, detail="this transformers version has no model.fpn"))
        features = float("nan")
    explained = FAIL if strict else WARN
    known = not layout.faithful
    note = "; --strict makes this fail" if known else ""
    ok = features <= atol
    result.checks.append(
        Check(
            "FPN features",
            PASS if ok else explained if known else FAIL,
            measured=f"max |Δ| {features:.2e}",
            bound=bound,
            detail=layout.describe() + note,
        )
    )
    delta = _max_abs(outputs.logits, reference.logits)
    result.checks.append(
        Check(
            "parity: logits",
            PASS if delta <= atol else explained if known else FAIL,
            measured=f"max |Δ| {delta:.2e}",
            bound=bound,
            detail=f"{arch.hf_class} as transformers runs it vs the original's UperNet{note}",
        )
    )


def folder_layout(config: Any, provenance: dict[str, Any] | None) -> FeatureLayout | None:
    """The folder's feature layout as the installed transformers reads it (None unless segmentation).

    The original's blocks come from provenance; a folder without that record uses the Hub's numbering.
    """
    from beit_tools.core.features import reading_offset

    if FAMILY_OF_CLASS.get((config.architectures or [""])[0]) is not Family.SEGMENTATION:
        return None
    record = (provenance or {}).get("features") or {}
    out_indices = tuple(config.out_indices)
    original = tuple(record.get("original") or out_indices)
    kind = record.get("kind", TRANSFORMERS)
    added = int(record.get("added_layers", 0))
    flavor = config.model_type if config.model_type in FLAVORS else BEIT  # a flavor is named by its model type
    return FeatureLayout(kind, original, out_indices, added, reading_offset(flavor), config.num_hidden_layers)


def check_feature_layout(result: VerifyResult, layout: FeatureLayout, strict: bool) -> None:
    """Without the source, the layout alone says whether the FPN gets the original's blocks."""
    status = PASS if layout.faithful else FAIL if strict else WARN
    note = "" if layout.faithful else "; --against measures the difference, --strict makes this fail"
    result.checks.append(Check("FPN features", status, detail=layout.describe() + note))


def check_round_trip(result: VerifyResult, weights: Written, analysis: Any) -> None:
    """Undo each op on the written tensors (un-split, un-rename) and compare with the source tensor.

    Casts are compared at the written precision. Applying the inverse to what was written, rather than
    the forward transform to the source again, catches targets written in the wrong order.
    """
    from beit_tools.core.ops import Cast

    plan = analysis.plan
    floating = [weights.info(k).dtype for k in weights if weights.info(k).dtype.is_floating_point]
    cast = Cast(floating[0] if floating else FLOAT32)
    writing = [m for m in plan.mappings if m.op is not None and m.op.writes]
    by_key = {m.key: m for m in writing}
    differing, absent = [], []
    for key, source in plan.reader(analysis.checkpoint.iter_tensors)(list(by_key)):
        m = by_key[key]
        lacking = [t for t in m.targets if t not in weights]
        if lacking:
            absent += lacking
            continue
        recovered = m.op.invert([weights[t] for t in m.targets])
        if recovered.shape != source.shape or not torch.equal(recovered, cast.apply(source)):
            differing.append(m.source_key)
    extra = sorted(set(weights) - {t for m in writing for t in m.targets})
    ok = not (differing or absent or extra)
    detail = "; ".join(
        f"{label}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
        for label, keys in (("differ", differing), ("absent", absent), ("not from the source", extra))
        if keys
    )
    result.add(
        "round trip",
        ok,
        measured=f"{len(writing) - len(differing) - len(set(absent))}/{len(writing)} source tensors recovered",
        bound="all, bit-identical",
        detail=detail or "every source tensor equals the written ones with their ops undone, at the written dtype",
    )


# --- entry point ---------------------------------------------------------------------------------


def verify(options: VerifyOptions) -> VerifyResult:
    out = options.output
    if not out.exists():
        raise BeitToolsError(f"no such folder: {out}", "pass the folder `beit-tools convert` wrote")
    if not out.is_dir():
        raise BeitToolsError(f"{out} is a file, not a converted model folder", "pass the folder convert wrote")
    if options.against is not None and not options.against.exists():
        raise BeitToolsError(f"no such file: {options.against}", "--against takes the source checkpoint")
    result = VerifyResult(out)
    result.provenance, _ = load_provenance(out)
    # A bad source is bad input: refuse it in one line before any check runs.
    analysis = analyse_source(options, result.provenance) if options.against is not None else None
    from beit_tools.core.scan import SourceScan

    hashing = SourceScan(options.against, []).start() if options.against is not None else None  # beside the load
    loaded = check_structure(result, out)
    check_provenance(result, out, hashing)
    result.checks.insert(0, result.checks.pop())  # where it came from reads first
    if loaded is None:
        _skip_rest(result, options, "the model does not load")
        return result
    model, weights = loaded
    layout = folder_layout(model.config, result.provenance)
    pixels = check_function(result, model, out, options)
    name = options.variant or (result.provenance or {}).get("variant")
    if name:
        check_expected(result, model, variant_by_name(name), options, layout, explicit=options.variant is not None)
    if analysis is not None:
        check_parity(result, model, weights, pixels, analysis, options, layout)
        check_round_trip(result, weights, analysis)
    else:
        if layout is not None:
            check_feature_layout(result, layout, options.strict)
        result.checks.append(Check("parity", SKIP, detail="give --against SOURCE to compare with the original"))
    return result


def _skip_rest(result: VerifyResult, options: VerifyOptions, why: str) -> None:
    names = ["forward"] + (["parity", "round trip"] if options.against is not None else [])
    result.checks += [Check(n, SKIP, detail=why) for n in names]
