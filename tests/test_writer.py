"""The output folder: files, sharding, dtype, labels, processor, provenance, and atomic replacement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from beit_tools.core.arch import Family
from beit_tools.core.convert import ConvertOptions, convert
from beit_tools.core.provenance import sha256_file
from beit_tools.errors import BeitToolsError
from beit_tools.synthetic import default_spec, tiny_arch, write_synthetic


def source(tmp_path: Path, family: Family = Family.CLASSIFICATION, **arch: object) -> Path:
    return write_synthetic(tmp_path / "src.pth", default_spec(tiny_arch(family, **arch)))


def test_folder_contents_config_and_provenance(tmp_path: Path) -> None:
    src = source(tmp_path)
    result = convert(ConvertOptions(src, tmp_path / "out"))
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(result.files)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BeitForImageClassification"]
    assert config["layer_norm_eps"] == 1e-6
    assert config["use_relative_position_bias"] is True and config["use_mean_pooling"] is True
    assert config["id2label"] == {str(i): f"LABEL_{i}" for i in range(5)}
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["source"]["sha256"] == sha256_file(src)
    assert prov["source"]["path"] == str(src.resolve())
    assert prov["family"] == "image-classification"
    assert prov["versions"]["transformers"] == transformers.__version__
    assert prov["evidence"]["num_attention_heads"].startswith("2 from blocks.0.attn.relative_position_bias_table")
    assert not list(tmp_path.glob(".out.*")), "temporary directories left behind"


def test_large_models_are_sharded_with_an_index_that_transformers_loads(tmp_path: Path) -> None:
    result = convert(ConvertOptions(source(tmp_path), tmp_path / "out", max_shard_bytes=60_000))
    out = tmp_path / "out"
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 1 and not (out / "model.safetensors").exists()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == result.bytes_written
    assert set(index["weight_map"].values()) == {p.name for p in shards}
    _, info = transformers.BeitForImageClassification.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))


def test_dtype_defaults_to_the_source(tmp_path: Path) -> None:
    src = write_synthetic(tmp_path / "h.pth", default_spec(tiny_arch(Family.CLASSIFICATION)).with_(dtype=torch.float16))
    result = convert(ConvertOptions(src, tmp_path / "out"))
    assert result.dtype.name == "float16"
    assert any("float16" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("family", "classes", "expected_first", "source_word"),
    [
        (Family.CLASSIFICATION, 1000, "tench, Tinca tinca", "imagenet-1k"),
        (Family.CLASSIFICATION, 21841, None, "imagenet-22k"),
        (Family.SEGMENTATION, 150, "wall", "meta.CLASSES"),
    ],
)
def test_bundled_and_embedded_labels(family, classes, expected_first, source_word, tmp_path: Path) -> None:
    result = convert(ConvertOptions(source(tmp_path, family, num_labels=classes), tmp_path / "out"))
    assert len(result.labels.id2label) == classes and source_word in result.labels.source
    if expected_first:
        assert result.labels.id2label[0] == expected_first


def test_labels_file_json_and_text(tmp_path: Path) -> None:
    src = source(tmp_path)
    (tmp_path / "l.json").write_text(json.dumps({str(i): f"n{i}" for i in range(5)}))
    (tmp_path / "l.txt").write_text("a\nb\nc\nd\ne\n")
    assert convert(ConvertOptions(src, tmp_path / "o1", labels_file=tmp_path / "l.json")).labels.id2label[4] == "n4"
    assert convert(ConvertOptions(src, tmp_path / "o2", labels_file=tmp_path / "l.txt")).labels.id2label[1] == "b"
    (tmp_path / "bad.txt").write_text("a\nb\n")
    with pytest.raises(BeitToolsError, match=r"names 2 classes.*the head has 5"):
        convert(ConvertOptions(src, tmp_path / "o3", labels_file=tmp_path / "bad.txt"))
    assert not (tmp_path / "o3").exists()


@pytest.mark.parametrize(
    ("family", "mean", "reduce"),
    [(Family.CLASSIFICATION, [0.5, 0.5, 0.5], False), (Family.SEGMENTATION, [0.485, 0.456, 0.406], True)],
)
def test_image_processor_loads_with_transformers(family, mean, reduce, tmp_path: Path) -> None:
    convert(ConvertOptions(source(tmp_path, family), tmp_path / "out"))
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path / "out")
    assert type(processor).__name__.startswith("BeitImageProcessor")
    assert list(processor.image_mean) == mean and processor.do_reduce_labels is reduce
    side = tiny_arch(family).image_size
    assert processor.size["height"] == side and processor.do_center_crop is False
    batch = processor(images=[torch.zeros(3, 50, 70, dtype=torch.uint8)], return_tensors="pt")
    assert batch["pixel_values"].shape == (1, 3, side, side)


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path) -> None:
    src = source(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(BeitToolsError, match="already exists"):
        convert(ConvertOptions(src, out))
    assert (out / "mine.txt").read_text() == "keep me"
    convert(ConvertOptions(src, out, overwrite=True))
    assert not (out / "mine.txt").exists() and (out / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src.pth"]


def test_a_failure_mid_write_leaves_nothing(tmp_path: Path) -> None:
    def explode(n: int) -> None:
        raise RuntimeError("disk went away")

    with pytest.raises(RuntimeError, match="disk went away"):
        convert(ConvertOptions(source(tmp_path), tmp_path / "out"), on_written=explode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.pth"]
