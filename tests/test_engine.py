"""The conversion engine: what it writes is byte for byte what a straightforward save_file of the same
tensors writes, whichever path made each tensor (kernel copy or computed), and what it reads never runs
code or holds the whole file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from beit_tools.core import scan
from beit_tools.core.arch import Family
from beit_tools.core.checkpoint import open_checkpoint
from beit_tools.core.convert import ConvertOptions, convert
from beit_tools.core.dtypes import BFLOAT16, FLOAT16, FLOAT32
from beit_tools.synthetic import (
    default_spec,
    make_state_dict,
    save_safetensors,
    tiny_arch,
    write_synthetic,
)

ARCH = tiny_arch(Family.CLASSIFICATION)


def straightforward(out: Path, reference: Path) -> None:
    """Every safetensors file of `out` against save_file of the same tensors, computed the plain way."""
    for path in sorted(out.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            names = f.keys()
            tensors = {k: f.get_tensor(k) for k in names}
        save_file(tensors, str(reference / path.name), metadata={"format": "pt"})
        assert path.read_bytes() == (reference / path.name).read_bytes(), path.name


def expected_tensors(sd: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """The converted tensors, made by hand from the source: renames and the qkv split, then the cast."""
    out = {}
    for key, t in sd.items():
        if key.endswith("relative_position_index"):
            continue
        t = t.to(dtype) if dtype is not None and t.is_floating_point() else t
        if key.endswith("attn.qkv.weight"):
            layer = key.split(".")[1]
            for name, part in zip(("query", "key", "value"), t.chunk(3), strict=True):
                out[f"beit.encoder.layer.{layer}.attention.attention.{name}.weight"] = part.contiguous()
        else:
            out[key] = t
    return out


CASES = {
    "fp32 zip": dict(dtype=torch.float32),
    "fp16 zip": dict(dtype=torch.float16),
    "bf16 zip": dict(dtype=torch.bfloat16),
    "fp32 zip cast to fp16": dict(dtype=torch.float32, cast="float16"),
    "fp16 zip cast to fp32": dict(dtype=torch.float16, cast="float32"),
    "fp32 zip cast to bf16": dict(dtype=torch.float32, cast="bfloat16"),
    "legacy": dict(dtype=torch.float32, legacy=True),
    "safetensors": dict(dtype=torch.float32, safetensors=True),
    "bf16 safetensors": dict(dtype=torch.bfloat16, safetensors=True),
    "sharded": dict(dtype=torch.float32, shard=40_000),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_output_is_byte_identical_to_save_file_of_the_same_tensors(case: str, tmp_path: Path) -> None:
    c = CASES[case]
    spec = default_spec(ARCH).with_(dtype=c["dtype"])
    if c.get("safetensors"):
        source = save_safetensors(make_state_dict(ARCH, dtype=c["dtype"], save_index=False), tmp_path / "s.safetensors")
    else:
        source = write_synthetic(tmp_path / "s.pth", spec, legacy=c.get("legacy", False))
    result = convert(
        ConvertOptions(source, tmp_path / "out", dtype=c.get("cast"), max_shard_bytes=c.get("shard", 5 * 10**9))
    )
    (tmp_path / "ref").mkdir()
    straightforward(tmp_path / "out", tmp_path / "ref")
    written = {}
    for path in (tmp_path / "out").glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            names = f.keys()
            written |= {k: f.get_tensor(k) for k in names}
    cast = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}.get(c.get("cast", ""))
    expected = expected_tensors(make_state_dict(ARCH, dtype=c["dtype"]), cast)
    renamed = {t.key: t.source for t in result.analysis.plan.target_tensors(_cast(result))}
    assert set(written) == set(renamed)
    for key, tensor in written.items():
        source_key = renamed[key]
        hand = expected.get(key, expected.get(source_key))
        assert tensor.dtype == hand.dtype and torch.equal(tensor, hand), key
    copied_all = not c.get("legacy") and not c.get("cast")
    assert (result.copied_bytes == result.bytes_written) is copied_all  # same dtype from zip/safetensors: kernel copy


def _cast(result):
    from beit_tools.core.ops import Cast

    return Cast(result.dtype)


def test_non_contiguous_and_shared_storages_are_computed_and_still_exact(tmp_path: Path) -> None:
    sd = make_state_dict(ARCH)
    stored = dict(sd)
    stored["blocks.0.attn.qkv.weight"] = sd["blocks.0.attn.qkv.weight"].t().contiguous().t()
    both = torch.stack((sd["blocks.1.attn.q_bias"], sd["blocks.1.attn.v_bias"]))
    stored["blocks.1.attn.q_bias"], stored["blocks.1.attn.v_bias"] = both[0], both[1]
    torch.save({"model": stored}, tmp_path / "views.pth")
    ckpt = open_checkpoint(tmp_path / "views.pth")
    assert "blocks.0.attn.qkv.weight" in ckpt.strided and "blocks.1.attn.v_bias" in ckpt.locations
    result = convert(ConvertOptions(tmp_path / "views.pth", tmp_path / "out"))
    (tmp_path / "ref").mkdir()
    straightforward(tmp_path / "out", tmp_path / "ref")
    assert result.copied_bytes < result.bytes_written
    with safe_open(str(tmp_path / "out" / "model.safetensors"), framework="pt") as f:
        query = f.get_tensor("beit.encoder.layer.0.attention.attention.query.weight")
        value_bias = f.get_tensor("beit.encoder.layer.1.attention.attention.value.bias")
    assert torch.equal(query, sd["blocks.0.attn.qkv.weight"][:32])
    assert torch.equal(value_bias, sd["blocks.1.attn.v_bias"])


@pytest.mark.parametrize("stored", ["legacy file", "strided view"])
def test_nan_is_found_in_tensors_the_scan_cannot_see(stored: str, tmp_path: Path) -> None:
    sd = make_state_dict(ARCH)
    sd["blocks.0.attn.qkv.weight"][5, 3] = float("nan")
    if stored == "strided view":
        sd["blocks.0.attn.qkv.weight"] = sd["blocks.0.attn.qkv.weight"].t().contiguous().t()
    torch.save({"model": sd}, tmp_path / "c.pth", _use_new_zipfile_serialization=stored != "legacy file")
    ckpt = open_checkpoint(tmp_path / "c.pth")
    assert "blocks.0.attn.qkv.weight" not in ckpt.locations
    result = convert(ConvertOptions(tmp_path / "c.pth", tmp_path / "out"))
    assert result.warnings[-1] == "1 tensor(s) hold NaN or Inf: blocks.0.attn.qkv.weight"


def test_the_zip_reader_needs_no_torch_and_falls_back_to_torch_for_what_it_does_not_know(tmp_path: Path) -> None:
    path = write_synthetic(tmp_path / "c.pth", default_spec(ARCH).with_(training_extras=True))
    code = (
        "import sys; from beit_tools.core.checkpoint import open_checkpoint; "
        f"c = open_checkpoint({str(path)!r}); assert c.locations and c.meta['args']['nb_classes'] == 5; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    torch.save({"model": make_state_dict(ARCH), "device": torch.device("cpu")}, tmp_path / "device.pth")
    ckpt = open_checkpoint(tmp_path / "device.pth")  # torch.device: torch's weights-only loader takes it
    assert ckpt.locations == {} and len(ckpt.infos) == len(make_state_dict(ARCH))


def test_the_scan_finds_a_nan_split_across_its_read_boundary(tmp_path: Path, monkeypatch) -> None:
    data = torch.zeros(10_000, dtype=torch.float32)
    data[1023] = float("nan")  # bytes 4092..4095, across a 4094-byte chunk boundary
    raw = data.numpy().tobytes()
    (tmp_path / "raw.bin").write_bytes(b"xx" + raw)
    monkeypatch.setattr(scan, "CHUNK", 4094)
    regions = [scan.Region("t", 2, len(raw), FLOAT32), scan.Region("u", 2, 4000, FLOAT32)]
    digest, bad = scan.SourceScan(tmp_path / "raw.bin", regions).start().result()
    assert bad == ["t"] and len(digest) == 64
    bf16 = torch.tensor([1.0, float("inf"), 2.0], dtype=torch.bfloat16).view(torch.uint16).numpy().tobytes()
    assert not scan.all_finite(bf16, BFLOAT16)
    assert scan.all_finite(torch.ones(3, dtype=torch.float16).numpy().tobytes(), FLOAT16)


def test_transformers_facts_are_cached_and_config_json_is_what_save_pretrained_writes(tmp_path: Path) -> None:
    import transformers

    from beit_tools.core.schema import beit_config

    source = write_synthetic(tmp_path / "c.pth", default_spec(ARCH))
    cache = tmp_path / "cache"
    convert(ConvertOptions(source, tmp_path / "cold", cache=cache))
    assert len(list((cache / "transformers").glob("*.json"))) == 1
    config = beit_config(ARCH, {i: f"LABEL_{i}" for i in range(5)}, FLOAT32)
    config.save_pretrained(tmp_path / "plain")
    assert (tmp_path / "cold" / "config.json").read_bytes() == (tmp_path / "plain" / "config.json").read_bytes()
    assert transformers.BeitConfig.from_pretrained(tmp_path / "cold").layer_norm_eps == 1e-6
    code = (
        "import sys; from pathlib import Path; from beit_tools.core.convert import ConvertOptions, convert; "
        f"convert(ConvertOptions(Path({str(source)!r}), Path({str(tmp_path / 'warm')!r}), cache=Path({str(cache)!r})));"
        " sys.exit(2 if 'transformers' in sys.modules else 3 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0  # neither is imported
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "warm" / name).read_bytes() == (tmp_path / "cold" / name).read_bytes()
    provenance = json.loads((tmp_path / "warm" / "provenance.json").read_text())
    assert provenance["versions"]["transformers"] == transformers.__version__


def test_the_buffered_fallback_writes_the_same_bytes(tmp_path: Path, monkeypatch) -> None:
    """Where the kernel cannot copy between the two files (another filesystem, an old kernel)."""
    import errno
    import os

    source = write_synthetic(tmp_path / "c.pth", default_spec(ARCH))
    convert(ConvertOptions(source, tmp_path / "kernel"))

    def refuse(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    convert(ConvertOptions(source, tmp_path / "buffered"))
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "buffered" / name).read_bytes() == (tmp_path / "kernel" / name).read_bytes()
