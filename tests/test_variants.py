"""The registry of official checkpoints: its entries agree with detection, and `--variant` fetches, checks and names."""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

from beit_tools.core.analysis import stated
from beit_tools.core.arch import Family
from beit_tools.core.checkpoint import TensorInfo
from beit_tools.core.detect import detect
from beit_tools.core.layout import expected_layout, parameter_count
from beit_tools.core.variants import V1_MIRRORS, VARIANTS
from beit_tools.synthetic import default_spec, tiny_arch, write_synthetic
from tests.servers import FileHost, HubServer
from tests.test_sources import EXE, online_env, process_env

# Parameter counts the unilm README publishes for the fine-tuned files, in millions (rounded there).
PUBLISHED_PARAMS = {
    "base-ft22kto1k": 87,
    "base-ft1k": 87,
    "base-ft22kto1k-384": 87,
    "large-ft1k": 304,
    "large-ft22kto1k": 304,
    "large-ft22kto1k-384": 305,
    "large-ft22kto1k-512": 306,
    "base-ade20k": 163,
    "large-ade20k": 441,
    "v2-base-ft1k": 86.5,
    "v2-base-ft21kto1k": 86.5,
    "v2-large-ft1k": 304,
    "v2-base-ade20k": 163,
    "dit-base-rvlcdip": 86,
}
EXPECTED_NAMES = [
    "base-pt22k",
    "large-pt22k",
    "base-ft22k",
    "large-ft22k",
    "base-ft1k",
    "large-ft1k",
    "base-ft22kto1k",
    "large-ft22kto1k",
    "base-ft22kto1k-384",
    "large-ft22kto1k-384",
    "large-ft22kto1k-512",
    "base-ade20k",
    "large-ade20k",
    "base-pt1k-800ep",
]


def layout_infos(arch) -> dict[str, TensorInfo]:
    """What a file of this architecture holds, as names and shapes only (no memory for the weights)."""
    return {k: TensorInfo(t.shape, torch.float32) for k, t in expected_layout(arch).items()}


FIRST_ADDRESS = {
    "BEiT": "https://github.com/addf400/files/releases/download/v1.0/{file}.pth",
    "BEiT v2": "https://github.com/addf400/files/releases/download/BEiT-v2/{file}.pth",
    "DiT": "https://layoutlm.blob.core.windows.net/dit/dit-{kind}/{file}.pth?sv=2022-11-02",
}


def test_the_registry_lists_the_official_files() -> None:
    assert sorted(v.name for v in VARIANTS.values() if v.series == "BEiT") == sorted(EXPECTED_NAMES)
    assert {v.series for v in VARIANTS.values()} == {"BEiT", "BEiT v2", "DiT"}
    for v in VARIANTS.values():
        kind = "fts" if v.family is Family.CLASSIFICATION else "pts"
        assert v.urls()[0].startswith(FIRST_ADDRESS[v.series].format(file=v.file, kind=kind))
        assert v.urls("http://mirror.local/beit/") == (f"http://mirror.local/beit/{v.file}.pth",)
        if v.series == "BEiT":
            assert v.urls()[1:] == tuple(f"{m}/{v.file}.pth" for m in V1_MIRRORS[1:])
    assert (
        VARIANTS["dit-base"].urls()[1]
        == "https://layoutlm.blob.core.windows.net/dit/dit-pts/dit-base-224-p16-500k-62d53a.pth"
    )


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_entry_agrees_with_what_detection_finds_in_a_file_of_its_shape(name: str) -> None:
    variant = VARIANTS[name]
    detected = detect(layout_infos(variant.arch()), known=stated(variant=variant)).arch
    assert detected == variant.arch()
    assert variant.mismatches(detected) == []
    assert round(parameter_count(detected) / 1e6, 1) == variant.params_m
    if name in PUBLISHED_PARAMS:  # as precise as the figure was published
        published = PUBLISHED_PARAMS[name]
        assert (variant.params_m if isinstance(published, float) else int(variant.params_m + 0.5)) == published


def test_a_different_architecture_is_named_field_by_field() -> None:
    variant = VARIANTS["base-ft22kto1k"]
    found = variant.mismatches(tiny_arch(Family.CLASSIFICATION))
    assert found == [
        "hidden size 32 where base-ft22kto1k has 768",
        "num hidden layers 2 where base-ft22kto1k has 12",
        "image size 32 where base-ft22kto1k has 224",
        "num labels 5 where base-ft22kto1k has 1000",
    ]
    assert VARIANTS["base-pt22k"].mismatches(tiny_arch(Family.CLASSIFICATION))[0] == (
        "family image-classification where base-pt22k has masked-image-modeling"
    )


def test_variants_command_table_and_json(invoke) -> None:
    table = invoke("variants")
    assert table.exit_code == 0
    for name in EXPECTED_NAMES:
        assert name in table.stdout
    data = json.loads(invoke("variants", "--json").stdout)
    ade = next(d for d in data if d["name"] == "large-ade20k")
    assert ade["output_name"] == "beit-large-finetuned-ade-640-640"
    assert ade["url"].endswith("/beit_large_patch16_640_pt22k_ft22ktoade20k.pth") and len(ade["mirrors"]) == 2
    assert (ade["family"], ade["image_size"], ade["num_labels"], ade["params_m"]) == (
        "semantic-segmentation",
        640,
        150,
        441.3,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--variant", "large-ade"], "unknown variant 'large-ade' — did you mean large-ade20k"),
        (["x.pth", "--variant", "base-ft1k"], "give exactly one checkpoint"),
        (["--offline"], "give exactly one checkpoint"),
    ],
)
def test_naming_mistakes_are_usage_errors(args, message, invoke) -> None:
    result = invoke("convert", *args)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr


@pytest.fixture(scope="module")
def base_file(tmp_path_factory) -> bytes:
    """A file with base-ft22kto1k's exact architecture (86.5M parameters, fp16 constants: 173 MB)."""
    arch = VARIANTS["base-ft22kto1k"].arch()
    spec = default_spec(arch).with_(dtype=torch.float16, fill=0.01, training_extras=True)
    return write_synthetic(tmp_path_factory.mktemp("v") / "base.pth", spec).read_bytes()


def test_convert_a_variant_through_a_mirror(base_file, tmp_path, invoke, monkeypatch) -> None:
    variant = VARIANTS["base-ft22kto1k"]
    monkeypatch.chdir(tmp_path)
    with FileHost().running() as host:
        url = host.add(f"internal/beit/{variant.filename}", base_file)
        env = online_env(tmp_path, BEIT_TOOLS_MIRROR=f"{host.url}/internal/beit")
        result = invoke("convert", "--variant", "base-ft22kto1k", env=env)
        assert result.exit_code == 0, result.stderr
        assert re.search(rf"variant +│ base-ft22kto1k \({variant.filename}\)", result.stdout)
        inspected = invoke("inspect", "--variant", "base-ft22kto1k", "--json", env=env)
        assert len(host.gets(f"internal/beit/{variant.filename}")) == 1  # inspect used the cache
    assert inspected.exit_code == 0 and json.loads(inspected.stdout)["variant"] == "base-ft22kto1k"
    out = tmp_path / "beit-base-patch16-224"
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["variant"] == "base-ft22kto1k" and provenance["source"]["url"] == url
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], len(config["id2label"])) == (768, 12, 1000)
    assert config["id2label"]["0"].startswith("tench")


def test_a_file_that_is_not_the_variant_is_refused(tmp_path, invoke, monkeypatch) -> None:
    variant = VARIANTS["base-ft22kto1k"]
    tiny = write_synthetic(tmp_path / "tiny.pth", default_spec(tiny_arch(Family.CLASSIFICATION))).read_bytes()
    monkeypatch.chdir(tmp_path)
    with FileHost().running() as host:
        host.add(f"beit/{variant.filename}", tiny)
        env = online_env(tmp_path, BEIT_TOOLS_MIRROR=f"{host.url}/beit")
        result = invoke("convert", "--variant", "base-ft22kto1k", env=env)
        inspected = invoke("inspect", "--variant", "base-ft22kto1k", env=env)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        f"error: {variant.filename} is not the base-ft22kto1k checkpoint: hidden size 32 where base-ft22kto1k has 768"
    )
    assert not (tmp_path / variant.output_name).exists()
    assert inspected.exit_code == 1 and "problem: beit_base_patch16_224_pt22k_ft22kto1k.pth is not" in inspected.stdout


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 30, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_verify_fetches_the_ade20k_test_image_from_the_hub_for_a_variant_in_provenance(tmp_path) -> None:
    from beit_tools.core.convert import ConvertOptions, convert

    arch = tiny_arch(Family.SEGMENTATION, num_labels=150, image_size=640, patch_size=80)  # 640 px, an 8x8 window
    convert(ConvertOptions(write_synthetic(tmp_path / "ade.pth", default_spec(arch)), tmp_path / "out"))
    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    (tmp_path / "out" / "provenance.json").write_text(json.dumps(provenance | {"variant": "base-ade20k"}))
    with HubServer().running() as hub:
        hub.create("dataset", "hf-internal-testing/fixtures_ade20k", {"ADE_val_00000001.jpg": _jpeg()})
        env = process_env(tmp_path, HF_ENDPOINT=hub.url)
        done = subprocess.run([EXE, "verify", tmp_path / "out", "--json"], capture_output=True, text=True, env=env)
        fetched = [p for m, p in hub.api_calls() if m == "GET" and p.endswith("ADE_val_00000001.jpg")]
    check = next(c for c in json.loads(done.stdout)["checks"] if c["name"] == "expected logits (base-ade20k)")
    # The tiny model is not the real one: the check ran on the fetched image and failed on the logits' shape.
    assert check["status"] == "fail" and check["bound"] == "shape [1, 150, 160, 160]"
    assert check["measured"] == "shape [1, 150, 32, 32]"
    assert fetched == ["/datasets/hf-internal-testing/fixtures_ade20k/resolve/main/ADE_val_00000001.jpg"]
    cached = list((tmp_path / "hf-home" / "hub").rglob("ADE_val_00000001.jpg"))
    assert cached and cached[0].read_bytes() == _jpeg()
    offline = subprocess.run(
        [EXE, "verify", tmp_path / "out", "--json", "--offline"], capture_output=True, text=True, env=env
    )
    again = next(c for c in json.loads(offline.stdout)["checks"] if c["name"] == "expected logits (base-ade20k)")
    assert again["measured"] == check["measured"]  # from the Hub cache, offline


def test_the_readme_table_is_the_registry() -> None:
    import importlib.util

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("readme_samples", root / "scripts" / "readme_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    block = re.search(r"<!-- variants:start -->\n(.*?)<!-- variants:end -->", (root / "README.md").read_text(), re.S)
    assert block is not None and block.group(1) == module.variants_markdown()
