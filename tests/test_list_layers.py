"""``robrep list-layers SOURCE``: every representation name with its output shape, for each model
source syntax (robrep file, tv:, timm:, hf:); shapes follow from the architectures (padding,
pooling, patch counts), and an unknown layer name elsewhere points at the command."""

from __future__ import annotations

import json

import pytest
import torch

from robrep.cli import main
from robrep.errors import InputError
from robrep.models import create_model, layer_shapes, representation, save_model


def _run(capsys, *args: str) -> dict:
    assert main(["list-layers", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _shapes(res: dict, kind: str) -> dict[str, list[int] | None]:
    return {r["name"]: r["shape"] for r in res["layers"] if r["kind"] == kind}


def test_robrep_file_shapes_from_the_architecture(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    model = create_model("small-cnn", dataset="demo")  # 1x28x28: conv16 (pad 1), pool 2, conv32 (pad 1), pool 2, fc1 128, fc 10
    ck = save_model(tmp_path / "m.safetensors", model, {"dataset": "demo"})
    res = _run(capsys, str(ck))
    assert res["input_shape"] == [1, 28, 28] and res["weights"] != "random init"
    assert _shapes(res, "alias") == {"penultimate": [128], "pooled": [128], "features": [32, 7, 7], "logits": [10]}
    mods = _shapes(res, "module")
    assert mods == {"conv1": [16, 28, 28], "conv2": [32, 14, 14], "fc1": [128], "fc": [10]}
    assert [r["name"] for r in res["layers"]][:4] == ["penultimate", "pooled", "features", "logits"]
    # each shape is what representation() gives for that name
    x = torch.rand(3, 1, 28, 28)
    for name, shp in {**_shapes(res, "alias"), **mods}.items():
        assert list(representation(model, name, flatten=False)(x).shape) == [3, *shp], name
    # other input size: the text output says so
    assert main(["list-layers", str(ck), "--no-modules"]) == 0
    out = capsys.readouterr().out
    assert "1x28x28" in out and "features     32x7x7" in out and "conv1" not in out


def test_torchvision_source_and_input_size(capsys) -> None:
    res = _run(capsys, "tv:resnet18", "--no-modules")
    assert res["weights"] == "random init" and res["input_shape"] == [3, 224, 224]
    assert _shapes(res, "alias") == {"penultimate": [512], "pooled": [512], "features": [512, 7, 7], "logits": [1000]}
    # another input size is resized inside the model to its 224 px, as in a measurement
    res64 = _run(capsys, "tv:resnet18", "--input-shape", "3", "64", "64")
    assert res64["input_shape"] == [3, 64, 64] and _shapes(res64, "module")["layer4"] == [512, 7, 7]
    assert _shapes(res64, "module")["conv1"] == [64, 112, 112] and _shapes(res64, "module")["fc"] == [1000]


def test_timm_vit_tokens_and_cls(capsys) -> None:
    pytest.importorskip("timm")
    res = _run(capsys, "timm:vit_tiny_patch16_224", "--no-modules")
    a = _shapes(res, "alias")
    assert a["features"] == [197, 192] and a["cls"] == [192] and a["pooled"] == [192] and a["logits"] == [1000]


def test_hf_folder_hidden_states(tmp_path, capsys) -> None:
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tf.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
    tf.ViTModel(cfg).eval().save_pretrained(tmp_path)
    tf.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    res = _run(capsys, f"hf:{tmp_path}")
    a = _shapes(res, "alias")
    tokens = (32 // 8) ** 2 + 1
    for i in range(3):  # embeddings, after block 1, after block 2
        assert a[f"hidden_states.{i}"] == [tokens, 32]
    assert a["cls"] == [32] and a["features"] == [tokens, 32]
    assert any(r["kind"] == "module" and r["shape"] is not None for r in res["layers"])


def test_unknown_layer_names_point_at_list_layers(capsys) -> None:
    from robrep.profile import check_layers

    model = create_model("small-cnn", dataset="demo")
    with pytest.raises(InputError, match="conv2.*robrep list-layers"):
        check_layers(model, ["nope"])
    with pytest.raises(InputError, match="robrep list-layers"):
        representation(model, "nope")
    assert main(["list-layers", "torchvision:resnet18"]) == 2
    assert "unknown model source scheme" in capsys.readouterr().err
    rows = layer_shapes(model, modules=False)
    assert [r.kind for r in rows] == ["alias"] * 4
