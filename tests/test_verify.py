"""`beit-tools verify`: a faithful conversion passes every check; each kind of damage fails the right one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from beit_tools.core import variants
from beit_tools.core.arch import Family
from beit_tools.core.convert import ConvertOptions, convert
from beit_tools.core.reference import reference_forward
from beit_tools.core.verify import VerifyOptions, seed_pixels, verify
from beit_tools.core.visual import LEGEND_WIDTH, synthetic_image
from beit_tools.synthetic import default_spec, make_state_dict, tiny_arch, write_synthetic


def converted(tmp_path: Path, family: Family = Family.CLASSIFICATION, **options: object) -> tuple[Path, Path]:
    spec = default_spec(tiny_arch(family))
    source = write_synthetic(tmp_path / "source.pth", spec)
    out = tmp_path / "out"
    convert(ConvertOptions(source, out, **options))
    return source, out


def statuses(result) -> dict[str, str]:
    return {c.name: c.status for c in result.checks}


def check(result, name: str):
    return next(c for c in result.checks if c.name == name)


def edit_weights(out: Path, change) -> None:
    weights = load_file(str(out / "model.safetensors"))
    change(weights)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})


def edit_config(out: Path, **fields: object) -> None:
    config = json.loads((out / "config.json").read_text())
    config.update(fields)
    (out / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("family", list(Family))
def test_faithful_conversion_passes_everything(family: Family, tmp_path: Path) -> None:
    source, out = converted(tmp_path, family)
    result = verify(VerifyOptions(out, against=source))
    assert result.passed, [c for c in result.checks if c.status == "fail"]
    got = statuses(result)
    for name in ("files", "weights readable", "config ↔ weights", "transformers load", "forward", "round trip"):
        assert got[name] == "pass"
    assert got["parity: hidden states"] == "pass"
    assert len(result.layers) == tiny_arch(family).num_hidden_layers + 1
    assert all(d.max_abs <= 1e-4 for d in result.layers)
    assert got["parity: logits"] == "pass"
    if family is Family.SEGMENTATION:  # the faithful layout: stock transformers computes the original's UperNet
        assert got["parity: decode head"] == "pass" and got["FPN features"] == "pass"
        assert "1 added pass-through layer(s) not compared" in check(result, "parity: hidden states").detail
    assert len(result.predictions) == 5


def test_the_transformers_layout_is_a_warning_and_fails_with_strict(tmp_path: Path) -> None:
    source, out = converted(tmp_path, Family.SEGMENTATION, feature_indices="transformers")
    result = verify(VerifyOptions(out, against=source))
    assert result.passed and statuses(result)["FPN features"] == "warn"
    assert statuses(result)["parity: logits"] == "warn" and statuses(result)["parity: decode head"] == "pass"
    assert float(check(result, "parity: logits").measured.split()[-1]) > 1e-2
    assert "the original uses blocks 0, 1, 2, 3" in check(result, "FPN features").detail
    strict = verify(VerifyOptions(out, against=source, strict=True))
    assert not strict.passed and statuses(strict)["FPN features"] == "fail"
    without_source = verify(VerifyOptions(out))
    assert statuses(without_source)["FPN features"] == "warn"
    _, faithful = converted(tmp_path / "f", Family.SEGMENTATION)
    assert statuses(verify(VerifyOptions(faithful)))["FPN features"] == "pass"


def test_swapped_key_and_value_rows_in_one_layer(tmp_path: Path) -> None:
    source, out = converted(tmp_path)
    k = "beit.encoder.layer.1.attention.attention.key.weight"
    v = "beit.encoder.layer.1.attention.attention.value.weight"

    def swap(w):
        w[k], w[v] = w[v].clone(), w[k].clone()

    edit_weights(out, swap)
    result = verify(VerifyOptions(out, against=source))
    assert not result.passed
    assert statuses(result)["transformers load"] == "pass"
    parity = check(result, "parity: hidden states")
    assert parity.status == "fail" and parity.detail == "first exceeds the bound at block 1"
    assert result.layers[1].max_abs <= 1e-4  # block 0 is still right
    trip = check(result, "round trip")
    assert trip.status == "fail" and trip.detail == "differ: blocks.1.attn.qkv.weight"


def test_missing_tensor(tmp_path: Path) -> None:
    source, out = converted(tmp_path)
    edit_weights(out, lambda w: w.pop("beit.encoder.layer.0.layernorm_after.bias"))
    result = verify(VerifyOptions(out, against=source))
    assert not result.passed
    assert "beit.encoder.layer.0.layernorm_after.bias" in check(result, "config ↔ weights").detail
    assert check(result, "transformers load").status == "fail"
    assert statuses(result)["parity"] == "skip"


def test_wrong_layer_norm_eps(tmp_path: Path) -> None:
    source, out = converted(tmp_path)
    edit_config(out, layer_norm_eps=1e-12)
    result = verify(VerifyOptions(out, against=source))
    eps = check(result, "layer norm eps")
    assert eps.status == "fail" and eps.measured == "1e-12"
    assert statuses(result)["round trip"] == "pass"  # the weights themselves are right


def test_wrong_image_size_in_config(tmp_path: Path) -> None:
    source, out = converted(tmp_path)
    edit_config(out, image_size=48)
    result = verify(VerifyOptions(out, against=source))
    detail = check(result, "config ↔ weights").detail
    assert check(result, "config ↔ weights").status == "fail" and "relative_position_bias_table" in detail
    assert check(result, "processor size").status == "fail"


def test_permuted_classifier_rows(tmp_path: Path) -> None:
    source, out = converted(tmp_path)

    def permute(w):
        order = torch.tensor([1, 0, 2, 3, 4])
        w["classifier.weight"] = w["classifier.weight"][order].contiguous()
        w["classifier.bias"] = w["classifier.bias"][order].contiguous()

    edit_weights(out, permute)
    result = verify(VerifyOptions(out, against=source))
    got = statuses(result)
    assert got["parity: hidden states"] == "pass"
    assert got["parity: logits"] == "fail"
    assert "head.weight" in check(result, "round trip").detail


@pytest.mark.parametrize("damage", ["truncate", "garbage-header"])
def test_corrupted_safetensors(damage: str, tmp_path: Path) -> None:
    _, out = converted(tmp_path)
    path = out / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(
        data[: len(data) // 2] if damage == "truncate" else b"\x10\x00\x00\x00\x00\x00\x00\x00{not json" + data[17:]
    )
    result = verify(VerifyOptions(out))
    readable = check(result, "weights readable")
    assert readable.status == "fail" and "damaged" in readable.detail
    assert statuses(result)["forward"] == "skip"


def test_nan_weights_fail(tmp_path: Path) -> None:
    _, out = converted(tmp_path)
    edit_weights(out, lambda w: w["classifier.bias"].__setitem__(2, float("nan")))
    result = verify(VerifyOptions(out))
    assert check(result, "finite weights").status == "fail"
    assert "classifier.bias" in check(result, "finite weights").detail


def test_half_precision_output_is_held_to_a_looser_bound_and_says_so(tmp_path: Path) -> None:
    source, out = converted(tmp_path, dtype="float16")
    result = verify(VerifyOptions(out, against=source))
    assert result.passed
    assert check(result, "parity: logits").bound == "0.01 (half precision)"
    assert check(result, "round trip").status == "pass"


def _stand_in(monkeypatch, tmp_path: Path, url: str | None, logits_shift: float = 0.0) -> None:
    """A stand-in official checkpoint whose expected logits come from the reference forward pass."""
    arch = tiny_arch(Family.CLASSIFICATION)
    image = synthetic_image(64)
    logits = reference_forward(make_state_dict(arch), arch, seed_pixels(image, arch.image_size)).logits
    expected = variants.Expected(
        (1, 5),
        tuple(float(v) + logits_shift for v in logits[0, :3]),
        int(logits.argmax()),
        variants.TestImage("t", url=url),
    )
    stand_in = variants.Variant(
        name="stand-in",
        file="synthetic",
        family=Family.CLASSIFICATION,
        size="base",
        image_size=arch.image_size,
        output_name="stand-in",
        params_m=0.0,
        expected=expected,
    )
    monkeypatch.setitem(variants.VARIANTS, "stand-in", stand_in)
    image.save(tmp_path / "cats.png")


def test_expected_logits_with_a_stand_in_table_fetched_over_http(monkeypatch, http_root, tmp_path: Path) -> None:
    root, base = http_root
    _stand_in(monkeypatch, root, f"{base}/cats.png")
    monkeypatch.setenv("BEIT_TOOLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # this test downloads, from 127.0.0.1
    _, out = converted(tmp_path)
    result = verify(VerifyOptions(out, variant="stand-in"))
    assert check(result, "expected logits (stand-in)").status == "pass"
    assert sorted(p.name for p in (tmp_path / "cache").rglob("cats.png*")) == ["cats.png", "cats.png.json"]
    (root / "cats.png").unlink()  # a second run needs no network
    assert check(verify(VerifyOptions(out, variant="stand-in")), "expected logits (stand-in)").status == "pass"


def test_expected_logits_fail_when_they_differ_and_variant_comes_from_provenance(monkeypatch, tmp_path: Path) -> None:
    _stand_in(monkeypatch, tmp_path, None, logits_shift=0.01)
    _, out = converted(tmp_path)
    provenance = json.loads((out / "provenance.json").read_text())
    (out / "provenance.json").write_text(json.dumps(provenance | {"variant": "stand-in"}))
    result = verify(VerifyOptions(out, image=tmp_path / "cats.png"))
    assert check(result, "expected logits (stand-in)").status == "fail"
    assert check(verify(VerifyOptions(out)), "expected logits (stand-in)").status == "skip"
    explicit = verify(VerifyOptions(out, variant="stand-in"))
    assert check(explicit, "expected logits (stand-in)").status == "fail"
    assert "with --image" in check(explicit, "expected logits (stand-in)").detail


@pytest.mark.parametrize("family", [Family.CLASSIFICATION, Family.SEGMENTATION])
def test_save_visual_writes_a_png(family: Family, tmp_path: Path) -> None:
    _, out = converted(tmp_path, family)
    verify(VerifyOptions(out, save_visual=tmp_path / "v.png"))
    with Image.open(tmp_path / "v.png") as img:
        assert img.format == "PNG"
        side = tiny_arch(family).image_size  # the synthetic input is the model's size
        assert img.width == (2 * side + LEGEND_WIDTH if family is Family.SEGMENTATION else 720)


def test_cli_exit_codes_json_and_bad_input(invoke, tmp_path: Path) -> None:
    source, out = converted(tmp_path)
    ok = invoke("verify", out, "--against", source, "--json")
    assert ok.exit_code == 0, ok.stdout
    data = json.loads(ok.stdout)
    assert data["passed"] is True and {c["name"] for c in data["checks"]} >= {"round trip", "parity: logits"}
    assert "✓ all" in invoke("verify", out).stdout
    edit_config(out, layer_norm_eps=1e-12)
    failed = invoke("verify", out)
    assert failed.exit_code == 1 and "check(s) failed: layer norm eps" in failed.stdout
    missing = invoke("verify", tmp_path / "nowhere")
    assert missing.exit_code == 1 and missing.stderr.startswith("error: no such folder")
    assert missing.stderr.count("\n") == 1


def test_against_a_different_file_than_the_recorded_source(tmp_path: Path) -> None:
    _, out = converted(tmp_path)
    other = write_synthetic(tmp_path / "other.pth", default_spec(tiny_arch(Family.CLASSIFICATION)).with_(seed=7))
    result = verify(VerifyOptions(out, against=other))
    provenance = check(result, "provenance")
    assert provenance.status == "fail" and provenance.detail == "--against is not the file this was converted from"
    assert statuses(result)["parity: logits"] == "fail"


def test_unreadable_provenance_and_inconsistent_dtype(tmp_path: Path) -> None:
    _, out = converted(tmp_path)
    (out / "provenance.json").write_text("{ half written")
    edit_config(out, dtype="float16")
    result = verify(VerifyOptions(out))
    assert check(result, "provenance").status == "fail"
    parameters = check(result, "parameters")
    assert parameters.status == "fail" and parameters.bound == "one dtype = config's float16"
    (out / "provenance.json").unlink()
    assert check(verify(VerifyOptions(out)), "provenance").status == "warn"


def test_unknown_variant_is_one_line(invoke, tmp_path: Path) -> None:
    _, out = converted(tmp_path)
    result = invoke("verify", out, "--variant", "huge-ft1k")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: unknown variant 'huge-ft1k'")
    assert "did you mean large-ft1k" in result.stderr


def test_empty_folder_and_broken_config(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = verify(VerifyOptions(tmp_path / "empty"))
    files = check(result, "files")
    assert files.status == "fail" and "config.json" in files.detail and "model.safetensors" in files.detail
    assert statuses(result)["forward"] == "skip"
    _, out = converted(tmp_path)
    (out / "config.json").write_text("{ not json")
    result = verify(VerifyOptions(out))
    assert check(result, "config").status == "fail" and not result.passed
