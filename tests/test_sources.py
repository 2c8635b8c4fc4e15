"""Model sources (tv:, timm:, hf:, open_clip:): each loaded through the public syntax gives the
same outputs as the library's own model on the same preprocessed input (max abs diff <= 1e-5),
records the source's preprocessing, and bad input gets a one-line error saying what to do.

Every model is built here with random weights by the library itself (no download)."""

from __future__ import annotations

import json

import pytest
import torch

import robrep
from robrep.errors import InputError, UnknownNameError
from robrep.models import list_layers, representation

TOL = 1e-5


def _norm(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


# ---------------------------------------------------------------------------------------------
# timm


@pytest.mark.parametrize("name,num_classes", [("test_vit", 5), ("test_vit", 0), ("test_resnet", 3)])
def test_timm_file_round_trip(tmp_path, name: str, num_classes: int) -> None:
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file
    from timm.data import resolve_data_config

    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, num_classes=num_classes).eval()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    model, meta = robrep.models.load_with_meta(f"timm:{name}@{path}")
    dc = resolve_data_config({}, model=net)
    # recorded preprocessing = timm's pretrained_cfg
    assert model.spec.mean == tuple(dc["mean"]) and model.spec.std == tuple(dc["std"])
    assert model.spec.input_shape == tuple(dc["input_size"])
    assert model.spec.preprocess["interpolation"] == dc["interpolation"] and meta["preprocess"]["crop_pct"] == dc["crop_pct"]
    assert meta["pretrained"] is True and meta["scheme"] == "timm" and meta["weights"] == str(path)
    x = torch.rand(2, *dc["input_size"])
    xn = _norm(x, dc["mean"], dc["std"])
    with torch.no_grad():
        assert _maxdiff(model(x), net(xn)) <= TOL
        feats = net.forward_features(xn)
        pooled = net.forward_head(feats, pre_logits=True)
        assert _maxdiff(representation(model, "penultimate")(x), pooled) <= TOL
        assert _maxdiff(representation(model, "features", flatten=False)(x), feats) <= TOL
        if num_classes == 0:  # an encoder without a head: its output is the pooled representation
            assert model.num_classes == pooled.shape[1] and _maxdiff(model(x), pooled) <= TOL
            with pytest.raises(InputError, match="no final linear classifier"):
                robrep.models.final_linear_name(model.net)
        if name == "test_vit":
            assert _maxdiff(representation(model, "cls")(x), feats[:, 0]) <= TOL
    assert list_layers(model)[:3] == ["penultimate", "pooled", "features"]


def test_timm_random_init_records_the_default_config_and_says_so() -> None:
    timm = pytest.importorskip("timm")
    model, meta = robrep.models.load_with_meta("timm:test_vit")
    cfg = timm.create_model("test_vit", pretrained=False).pretrained_cfg
    assert meta["pretrained"] is False and "random-init" in meta["preprocess"]["source"]
    assert model.spec.input_shape == tuple(cfg["input_size"]) and model.spec.mean == tuple(cfg["mean"])


def test_timm_pretrained_tag_not_cached_says_which_file_and_how(tmp_path, monkeypatch) -> None:
    pytest.importorskip("timm")
    import robrep.models.sources as sources

    monkeypatch.setattr(sources, "_hub_cached", lambda repo_id, filenames: None)  # an empty cache, whatever this machine holds
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(InputError, match=r"timm/test_vit\.r160_in1k.*--download"):
        robrep.load("timm:test_vit@r160_in1k")
    with pytest.raises(InputError, match="does not exist"):
        robrep.load("timm:test_vit@/no/such/dir/weights.safetensors")
    with pytest.raises(UnknownNameError, match="timm has no model"):
        robrep.load("timm:not_a_timm_model_xyz")


# ---------------------------------------------------------------------------------------------
# torchvision


def test_torchvision_file_round_trip(tmp_path) -> None:
    from torchvision import models as tvm

    torch.manual_seed(0)
    net = tvm.resnet18(num_classes=7).eval()
    path = tmp_path / "r18.pth"
    torch.save(net.state_dict(), path)
    model, meta = robrep.models.load_with_meta(f"tv:resnet18@{path}")
    t = tvm.ResNet18_Weights.DEFAULT.transforms()
    assert model.spec.mean == tuple(t.mean) and model.spec.std == tuple(t.std)
    assert model.spec.input_shape == (3, *t.crop_size * 2)[:3] and model.spec.preprocess["interpolation"] == t.interpolation.value
    assert model.num_classes == 7 and meta["pretrained"] is True
    x = torch.rand(1, 3, 224, 224)
    xn = _norm(x, t.mean, t.std)
    with torch.no_grad():
        assert _maxdiff(model(x), net(xn)) <= TOL
        f = net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(xn))))))))
        assert _maxdiff(representation(model, "penultimate")(x), f.mean((2, 3))) <= TOL
        assert _maxdiff(representation(model, "features", flatten=False)(x), f) <= TOL


def test_torchvision_weights_enum_from_cache_or_a_clear_error(tmp_path, monkeypatch) -> None:
    from torchvision import models as tvm

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    w = tvm.ResNet18_Weights.IMAGENET1K_V1
    fname = w.url.rsplit("/", 1)[-1]
    with pytest.raises(InputError, match=rf"{fname}.*--download"):
        robrep.load("tv:resnet18@IMAGENET1K_V1")
    # a file in the torch hub cache is used offline, with the weights' own preprocessing
    torch.manual_seed(1)
    net = tvm.resnet18().eval()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(net.state_dict(), tmp_path / "hub" / "checkpoints" / fname)
    model, meta = robrep.models.load_with_meta("tv:resnet18@IMAGENET1K_V1")
    assert meta["weights"] == str(w) and meta["pretrained"] is True and model.num_classes == 1000
    t = w.transforms()
    assert model.spec.mean == tuple(t.mean) and model.spec.preprocess["crop_pct"] == pytest.approx(224 / 256, abs=1e-4)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert _maxdiff(model(x), net(_norm(x, t.mean, t.std))) <= TOL
    with pytest.raises(UnknownNameError, match="IMAGENET1K_V1"):
        robrep.load("tv:resnet18@NOT_A_WEIGHT")
    # no weights: random init, said so, with the default weights' preprocessing
    rand, meta = robrep.models.load_with_meta("tv:resnet18")
    assert meta["pretrained"] is False and meta["weights"] is None and "default weights" in meta["preprocess"]["source"]
    assert rand.spec.mean == tuple(t.mean) and rand.spec.input_shape == (3, 224, 224)


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers

MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.3, 0.25]


def _hf_model(kind: str):  # type: ignore[no-untyped-def]
    tf = pytest.importorskip("transformers")
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
    if kind == "vit":
        return tf.ViTModel(tf.ViTConfig(**common)), tf.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=MEAN,
                                                                          image_std=STD, resample=3)
    if kind == "vit-classifier":
        return (tf.ViTForImageClassification(tf.ViTConfig(**common, num_labels=4)),
                tf.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=MEAN, image_std=STD, resample=2))
    if kind == "dinov2":
        return (tf.Dinov2Model(tf.Dinov2Config(**{k: v for k, v in common.items() if k != "intermediate_size"}, mlp_ratio=2)),
                tf.BitImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}, image_mean=MEAN,
                                     image_std=STD, resample=3))
    if kind == "clip":
        return (tf.CLIPVisionModel(tf.CLIPVisionConfig(**common)),
                tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=MEAN,
                                      image_std=STD, resample=3))
    if kind == "siglip":
        return (tf.SiglipVisionModel(tf.SiglipVisionConfig(**common)),
                tf.SiglipImageProcessor(size={"height": 32, "width": 32}, image_mean=MEAN, image_std=STD, resample=2))
    if kind == "convnext":
        return (tf.ConvNextModel(tf.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)),
                tf.ConvNextImageProcessor(size={"shortest_edge": 32}, image_mean=MEAN, image_std=STD, resample=3))
    if kind == "swin":
        return (tf.SwinModel(tf.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2],
                                           window_size=4)),
                tf.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=MEAN, image_std=STD, resample=3))
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["vit", "vit-classifier", "dinov2", "clip", "siglip", "convnext", "swin"])
def test_hf_folder_round_trip(tmp_path, kind: str) -> None:
    torch.manual_seed(0)
    net, proc = _hf_model(kind)
    net.eval().save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "preprocessor_config.json").read_text())
    model, meta = robrep.models.load_with_meta(f"hf:{tmp_path}")
    # recorded preprocessing = the image processor's config
    assert model.spec.mean == pytest.approx(tuple(cfg["image_mean"])) and model.spec.std == pytest.approx(tuple(cfg["image_std"]))
    assert model.spec.input_shape == (3, 32, 32) and meta["preprocess"]["size"] == [32, 32]
    assert meta["preprocess"]["interpolation"] == {2: "bilinear", 3: "bicubic"}[cfg["resample"]]
    assert meta["preprocess"]["source"] == "preprocessor_config.json" and meta["model_type"] == net.config.model_type
    x = torch.rand(3, 3, 32, 32)
    xn = _norm(x, MEAN, STD)
    with torch.no_grad():
        out = net(pixel_values=xn, output_hidden_states=True)
        if kind == "vit-classifier":
            assert model.num_classes == 4 and _maxdiff(model(x), out.logits) <= TOL
            base = net.base_model(pixel_values=xn)
            assert _maxdiff(representation(model, "penultimate")(x), base.last_hidden_state[:, 0]) <= TOL
            hs = net.base_model(pixel_values=xn, output_hidden_states=True).hidden_states
        else:
            assert _maxdiff(model(x), out.pooler_output) <= TOL
            assert _maxdiff(representation(model, "penultimate")(x), out.pooler_output) <= TOL
            assert _maxdiff(representation(model, "features", flatten=False)(x), out.last_hidden_state) <= TOL
            hs = out.hidden_states
            with pytest.raises(InputError, match="no final linear classifier"):
                robrep.models.final_linear_name(model.net)
        for i in range(len(hs)):
            assert _maxdiff(representation(model, f"hidden_states.{i}", flatten=False)(x), hs[i]) <= TOL
        names = list_layers(model)
        assert f"hidden_states.{len(hs)}" not in names
        if kind in ("convnext", "swin", "siglip"):  # no class token
            assert "cls" not in names
        else:
            assert _maxdiff(representation(model, "cls")(x), representation(model, "features", flatten=False)(x)[:, 0]) <= TOL
    assert names[0] == "penultimate" and {"pooled", "features", "hidden_states.0", "logits"} <= set(names)


def test_hf_round_trip_through_a_robrep_checkpoint(tmp_path) -> None:
    torch.manual_seed(0)
    net, proc = _hf_model("dinov2")
    net.eval().save_pretrained(tmp_path / "hf")
    proc.save_pretrained(tmp_path / "hf")
    model = robrep.load(f"hf:{tmp_path / 'hf'}")
    back = robrep.load(robrep.save_model(tmp_path / "m.safetensors", model, {}))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), back(x))
    assert back.spec == model.spec and back.spec.preprocess["interpolation"] == "bicubic"


def test_hf_without_processor_config_uses_the_model_types_defaults(tmp_path) -> None:
    tf = pytest.importorskip("transformers")
    net, _ = _hf_model("vit")
    net.save_pretrained(tmp_path)
    model, meta = robrep.models.load_with_meta(f"hf:{tmp_path}")
    d = tf.ViTImageProcessor()  # what transformers itself would use
    assert model.spec.mean == tuple(d.image_mean) and model.spec.std == tuple(d.image_std)
    assert "ViTImageProcessor" in meta["preprocess"]["source"]


def test_hf_hub_id_not_cached_and_missing_folder_say_what_to_do() -> None:
    pytest.importorskip("transformers")
    with pytest.raises(InputError, match=r"robrep-test-org/no-such-model.*not available offline.*--download"):
        robrep.load("hf:robrep-test-org/no-such-model")
    with pytest.raises(InputError, match="does not exist"):
        robrep.load("hf:./no/such/folder/here")


# ---------------------------------------------------------------------------------------------
# open_clip


def test_open_clip_file_round_trip(tmp_path) -> None:
    open_clip = pytest.importorskip("open_clip")
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
           "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "robrep-tiny-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "robrep-tiny-clip.json")
    torch.manual_seed(0)
    clip = open_clip.create_model("robrep-tiny-clip").eval()
    path = tmp_path / "clip.pt"
    torch.save(clip.state_dict(), path)
    model, meta = robrep.models.load_with_meta(f"open_clip:robrep-tiny-clip@{path}")
    assert model.spec.mean == tuple(OPENAI_DATASET_MEAN) and model.spec.std == tuple(OPENAI_DATASET_STD)
    assert model.spec.input_shape == (3, 32, 32) and meta["preprocess"]["interpolation"] == "bicubic"
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = clip.encode_image(_norm(x, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD))
        assert model.num_classes == 16 and _maxdiff(model(x), ref) <= TOL
        assert _maxdiff(representation(model, "penultimate")(x), ref) <= TOL
    assert list_layers(model)[:3] == ["penultimate", "pooled", "features"]
    with pytest.raises(InputError, match="needs weights"):
        robrep.load("open_clip:robrep-tiny-clip")


def test_open_clip_tag_not_cached_says_how(monkeypatch) -> None:
    pytest.importorskip("open_clip")
    import robrep.models.sources as sources

    monkeypatch.setattr(sources, "_hub_cached", lambda repo_id, filenames: None)
    with pytest.raises(InputError, match=r"ViT-B-32@laion2b_s34b_b79k is not available offline.*--download"):
        robrep.load("open_clip:ViT-B-32@laion2b_s34b_b79k")
    with pytest.raises(UnknownNameError, match="no pretrained tag"):
        robrep.load("open_clip:ViT-B-32@no_such_tag")


# ---------------------------------------------------------------------------------------------
# Input adaptation and bad input


@pytest.fixture(scope="module")
def vit(tmp_path_factory):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("vit")
    net, proc = _hf_model("vit")
    net.eval().save_pretrained(d)
    proc.save_pretrained(d)
    return d


def test_other_size_is_resized_inside_with_the_sources_interpolation_and_recorded(vit) -> None:
    from robrep.models import resize_images

    model = robrep.load(f"hf:{vit}")
    x = torch.rand(2, 3, 20, 24)
    with torch.no_grad():
        y = model(x)
        ref = model(resize_images(x, (32, 32), "bicubic"))
        direct = torch.nn.functional.interpolate(x, size=(32, 32), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    assert torch.equal(y, ref) and torch.allclose(resize_images(x, (32, 32), "bicubic"), direct)
    assert model.adaptations["resize"] == {"20x24": {"to": [32, 32], "interpolation": "bicubic"}}
    strict = robrep.load(f"hf:{vit}", resize=False)
    with pytest.raises(InputError, match="20x24 but model .* takes 32x32.*resize"):
        strict(x)


def test_gray_images_need_the_flag_and_then_repeat_the_channel(vit) -> None:
    model = robrep.load(f"hf:{vit}")
    g = torch.rand(2, 1, 32, 32)
    with pytest.raises(InputError, match="1 channel but model .* expects 3.*--gray-to-rgb.*adapt_channels=True"):
        model(g)
    with pytest.raises(InputError, match="--gray-to-rgb"):
        robrep.models.check_images(g, model)
    adapted = robrep.load(f"hf:{vit}", adapt_channels=True)
    robrep.models.check_images(g, adapted)
    with torch.no_grad():
        assert torch.equal(adapted(g), model(g.expand(-1, 3, -1, -1)))
    assert adapted.spec.preprocess["adapt_channels"] is True and adapted.adaptations["channels"]["how"] == "repeat"


def test_unknown_layer_lists_the_names(vit) -> None:
    model = robrep.load(f"hf:{vit}")
    with pytest.raises(InputError, match=r"no layer 'nope'.*penultimate, pooled, features, cls, hidden_states\.0"):
        representation(model, "nope")


def test_unknown_scheme_lists_the_schemes() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown model source scheme 'hff'.*did you mean hf:.*hf:, open_clip:, timm:, tv:"):
        robrep.load("hff:some/model")


def test_cli_errors_are_one_line_exit_2(capsys, vit) -> None:
    from robrep.cli import main

    assert main(["eval", "--checkpoint", "nope:thing", "--dataset", "demo", "--eps", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model source scheme 'nope'" in err[0]
    assert main(["eval", "--checkpoint", f"hf:{vit}", "--dataset", "demo", "--n", "4", "--eps", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--gray-to-rgb" in err[0]


def test_cli_runs_a_source_with_gray_to_rgb_and_resize_and_records_both(capsys, tmp_path, vit) -> None:
    from robrep.cli import main

    assert main(["eval", "--checkpoint", f"hf:{vit}", "--dataset", "demo", "--n", "4", "--eps", "0", "--gray-to-rgb",
                 "--device", "cpu", "--json", "--quiet", "--out", str(tmp_path / "run")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n"] == 4 and 0.0 <= out["clean_accuracy"] <= 1.0
    rec = json.loads((tmp_path / "run" / "record.json").read_text())["config"]["model_record"]
    assert rec["spec"]["mean"] == pytest.approx(MEAN) and rec["spec"]["preprocess"]["interpolation"] == "bicubic"
    assert rec["adaptations"] == {"channels": {"from": 1, "to": 3, "how": "repeat"},
                                  "resize": {"28x28": {"to": [32, 32], "interpolation": "bicubic"}}}
