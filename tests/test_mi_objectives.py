"""Tests of the (worst-case) MI maximization objectives, the dim-encoder and the vulnerability CLI
(Zhu, Zhang & Evans, ICML 2020; docs/methods/vulnerability.md)."""

from __future__ import annotations

import json

import pytest
import torch

import robrep
from robrep.data import TensorImageData, dataset_info
from robrep.info import dv_bound, infonce_bound
from robrep.models import create_model, representation, save_model
from robrep.objectives import OBJECTIVES, StepContext, create_objective
from robrep.threats import threat

SMALL_ENC = {"width": 4, "hidden": 32}
SMALL_CRITIC = {"critic_hidden": 16, "critic_width": 4}


def _encoder(shape: tuple[int, int, int] = (1, 28, 28)) -> robrep.models.RobrepModel:
    torch.manual_seed(0)
    return create_model("dim-encoder", num_classes=10, input_shape=shape, **SMALL_ENC)


def test_registry_flags() -> None:
    assert "mi" in OBJECTIVES and "worst-case-mi" in OBJECTIVES
    mi, wc = create_objective("mi"), create_objective("worst-case-mi")
    assert not mi.supervised and not wc.supervised
    assert not mi.needs_threat and wc.needs_threat
    assert "dim-encoder" in robrep.models.list_models()


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_dim_encoder_is_the_representation(shape: tuple[int, int, int]) -> None:
    m = create_model("dim-encoder", num_classes=10, input_shape=shape)  # paper sizes
    z = m(torch.rand(3, *shape))
    assert z.shape == (3, 64)
    assert m.net.fc.in_features == 1024
    assert m.net.fc1[0].in_features == 256 * (3 if shape[1] == 28 else 4) ** 2  # 2304 on MNIST, 4096 on CIFAR
    assert torch.allclose(representation(m, "logits")(torch.zeros(2, *shape)), m(torch.zeros(2, *shape)))


def test_mi_loss_equals_bound_and_gradients_reach_everything() -> None:
    m = _encoder()
    obj = create_objective("mi", estimator="infonce", **SMALL_CRITIC)
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    obj.setup(m, x)
    critic = obj.extra_modules()
    assert critic is not None
    m.train()
    loss, met = obj.loss(m, x, torch.zeros(8, dtype=torch.long), StepContext(None, None))
    assert float(loss.detach()) == pytest.approx(-float(infonce_bound(critic(x, m(x)).detach())), abs=1e-5)
    loss.backward()
    for name, p in list(m.named_parameters()) + list(critic.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert float(met["mi"]) == pytest.approx(-float(loss), abs=1e-5)


def test_worst_case_mi_perturbation_and_beta() -> None:
    m = _encoder()
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    thr = threat("linf", 0.1)
    obj1 = create_objective("worst-case-mi", estimator="dv", beta=1.0, attack_steps=3, **SMALL_CRITIC)
    obj1.setup(m, x)
    critic = obj1.extra_modules()
    ctx = StepContext(thr, None)
    m.train()
    xa = obj1.worst_case(m, x, ctx)
    assert bool(thr.contains(xa, x).all())
    assert m.training and critic.training  # modes restored
    m.eval()
    critic.eval()
    with torch.no_grad():
        i_clean = float(dv_bound(critic(x, m(x))))
        i_adv = float(dv_bound(critic(xa, m(xa))))
    assert i_adv <= i_clean + 1e-5  # the perturbation lowers the batch estimate (best iterate kept)
    # beta mixes the clean and worst-case terms: loss(beta) = -[(1 - beta) I + beta I']
    obj_half = create_objective("worst-case-mi", estimator="dv", beta=0.5, attack_steps=3, **SMALL_CRITIC)
    obj_half.critic = critic
    torch.manual_seed(0)
    l1, _ = obj1.loss(m, x, None, ctx)  # eval mode: deterministic forward
    lh, met = obj_half.loss(m, x, None, ctx)
    assert float(lh) == pytest.approx(-(0.5 * float(met["mi"]) + 0.5 * float(met["mi_worst"])), abs=1e-5)
    assert float(l1) == pytest.approx(-float(met["mi_worst"]), abs=1e-4)
    with pytest.raises(robrep.errors.InputError):
        obj1.loss(m, x, None, StepContext(None, None))


def _tiny_data(n: int = 64) -> TensorImageData:
    g = torch.Generator().manual_seed(0)
    return TensorImageData(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g), dataset_info("mnist"))


def test_train_loop_checkpoints_the_critic(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import load_file

    from robrep.train import TrainConfig, train

    cfg = TrainConfig(model="dim-encoder", dataset="mnist", objective="worst-case-mi", eps=0.1, epochs=1, batch_size=32,
                      optimizer="adam", lr=1e-4, weight_decay=0.0, schedule="constant", eval_n=0, model_kwargs=SMALL_ENC,
                      objective_kwargs={**SMALL_CRITIC, "attack_steps": 2})
    res = train(cfg, tmp_path, train_data=_tiny_data(), show_progress=False)
    assert "train_mi_worst" in res.history[-1]
    crit = load_file(str(tmp_path / "objective.safetensors"))
    assert any(k.startswith("local.") for k in crit) and any(k.startswith("glob.") for k in crit)
    m = robrep.load(tmp_path / "model.safetensors")
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 64)


def test_vulnerability_cli_json(tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from robrep.cli import main

    m = create_model("small-cnn", dataset="mnist", width=4, feat_dim=8)
    ck = tmp_path / "m.safetensors"
    save_model(ck, m, {"dataset": "mnist"})
    import robrep.data as rd

    monkeypatch.setattr(rd, "load_dataset", lambda *a, **k: _tiny_data(200))  # synthetic data, no files needed
    rc = main(["vulnerability", "--checkpoint", str(ck), "--layer", "logits,fc1", "--eps", "0.1", "--n", "200",
               "--critic", "mlp", "--critic-hidden", "8", "--n-critics", "2", "--steps", "3", "--batch-size", "32",
               "--attack-steps", "2", "--eval-attack-steps", "2", "--eval-batches", "2", "--json", "--quiet",
               "--out", str(tmp_path / "run")])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for k in ("mi_clean", "mi_worst", "vulnerability", "accuracy_bound"):
        assert {"estimate", "low", "high"} <= set(out[k]), k
        assert out[k]["low"] <= out[k]["estimate"] <= out[k]["high"]
    assert out["layers"] == ["logits", "fc1"] and len(out["vulnerability_per_layer"]) == 2
    assert (tmp_path / "run" / "record.json").is_file() and (tmp_path / "run" / "vulnerability.png").is_file()
