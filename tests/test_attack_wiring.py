"""One attack engine: every command that reports robust accuracy (eval, transfer, the linear
probes of vulnerability and SynBench, the demo) takes ``--attack NAME`` from the one registry,
records the attack (and a protocol's version), measures with it what calling it directly measures,
and refuses an unknown name before any work with the list of names (exit 2)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import robrep
from robrep.cli import main
from robrep.models import create_model, representation, save_model

EPS = 0.05


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo_model():
    """A small CNN briefly trained on the demo data: some points robust at EPS, some not."""
    tr = robrep.load_dataset("demo", "train").head(600)
    te = robrep.load_dataset("demo", "test").head(40)
    torch.manual_seed(0)
    m = create_model("small-cnn", num_classes=10, input_shape=(1, 28, 28), width=4, feat_dim=16)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    x, y = tr.tensors()
    for _ in range(3):
        for i in range(0, len(y), 64):
            loss = torch.nn.functional.cross_entropy(m.train()(x[i:i + 64]), y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return m.eval(), tr, te


def test_transfer_attack_is_the_protocol_and_not_weaker_than_pgd(demo_model) -> None:
    from robrep.transfer import TransferConfig, transfer

    m, tr, te = demo_model
    res = {}
    for attack in ("pgd", "fast"):
        cfg = TransferConfig(epochs=1, eval_eps=EPS, eval_n=30, eval_attack=attack, seed=0)
        res[attack] = transfer(m, tr.head(200), te, cfg)
    pgd, fast = res["pgd"], res["fast"]
    assert pgd.natural_accuracy == fast.natural_accuracy  # the same transferred model
    assert fast.adversarial_accuracy <= pgd.adversarial_accuracy < pgd.natural_accuracy + 1e-9
    assert fast.attack == {"name": "fast", "protocol_version": "2"} and pgd.attack["name"] == "pgd"
    assert list(fast.stages) == ["clean", "apgd-ce", "apgd-t", "square"] and fast.stages["square"] == fast.adversarial_accuracy
    direct = robrep.evaluate(fast.model, te, threat=robrep.threat("linf", EPS), attack="fast", n=30, seed=0)
    assert direct.robust_accuracy == fast.adversarial_accuracy


def test_linear_probe_attack_is_the_protocol_and_not_weaker_than_pgd(demo_model) -> None:
    from robrep.evaluate import linear_probe

    m, tr, te = demo_model
    thr = robrep.threat("linf", EPS)
    p = linear_probe(m, tr.head(300), te, eval_threat=thr, attack="pgd", eval_n=30)
    f = linear_probe(m, tr.head(300), te, eval_threat=thr, attack="fast", eval_n=30)
    assert p.natural_accuracy == f.natural_accuracy
    assert f.adversarial_accuracy <= p.adversarial_accuracy
    assert f.eval["attack"]["protocol_version"] == "2" and "steps" not in f.eval["attack"]  # the protocol's own budgets
    assert p.eval["attack"]["name"] == "pgd" and p.eval["attack"]["steps"] == 20 and "stages" not in p.eval
    assert f.eval["stages"]["square"] == f.adversarial_accuracy
    direct = robrep.evaluate(f.classifier, te, threat=thr, attack="fast", n=30, seed=0)
    assert direct.robust_accuracy == f.adversarial_accuracy


def test_vulnerability_probe_attack_not_weaker_than_pgd(demo_model) -> None:
    from robrep.info.estimate import probe_robust_accuracy

    m, _, te = demo_model
    x, y = te.tensors()
    rep = representation(m, "penultimate")
    thr = robrep.threat("linf", EPS)
    nat_p, rob_p = probe_robust_accuracy(rep, x, y, thr, eval_fraction=0.5, num_classes=10)
    nat_f, rob_f = probe_robust_accuracy(rep, x, y, thr, eval_fraction=0.5, num_classes=10, attack="fast")
    assert nat_p == nat_f and rob_f <= rob_p <= nat_p


def test_demo_table_attack_not_weaker_than_pgd(demo_model) -> None:
    from robrep.demo import FAST, _accuracy, _notes, _probe

    m, tr, te = demo_model
    thr = robrep.threat("linf", EPS)
    sizes = dataclasses.replace(FAST, curve_eps=(0.1,), probe_train_n=200, probe_eval_n=30, probe_epochs=2)
    a_p, a_f = _accuracy(m, te.head(30), thr, sizes, 0), _accuracy(m, te.head(30), thr, sizes, 0, attack="fast")
    assert a_f["robust_accuracy"] <= a_p["robust_accuracy"] and a_f["clean_accuracy"] == a_p["clean_accuracy"]
    assert all(f <= p for (_, f), (_, p) in zip(a_f["robust_accuracy_vs_eps"], a_p["robust_accuracy_vs_eps"]))
    assert a_f["attack"]["protocol_version"] == "2" and a_f["robust_accuracy_after_square"] == a_f["robust_accuracy"]
    (p_p, _), (p_f, d_f) = _probe(m, tr, te, thr, sizes, 0), _probe(m, tr, te, thr, sizes, 0, attack="fast")
    assert p_f["probe_adversarial_accuracy"] <= p_p["probe_adversarial_accuracy"]
    assert d_f["eval"]["attack"]["name"] == "fast"
    assert "the fast protocol (version 2)" in _notes(sizes, False, "fast")[0]


def test_cli_transfer_records_the_protocol(tmp_path, demo_model, capsys) -> None:
    m, _, _ = demo_model
    ck = save_model(tmp_path / "m.safetensors", m, {"dataset": "demo", "threat": None})
    common = ["transfer", "--checkpoint", str(ck), "--target", "demo", "--target-fraction", "0.05", "--epochs", "1",
              "--eval-eps", str(EPS), "--eval-n", "12", "--json", "--quiet", "--device", "cpu"]
    outs = {}
    for attack in ("pgd", "autoattack-standard"):
        assert main([*common, "--attack", attack, "--out", str(tmp_path / attack)]) == 0
        outs[attack] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    aa = outs["autoattack-standard"]
    assert aa["adversarial_accuracy"] <= outs["pgd"]["adversarial_accuracy"]
    assert aa["attack"] == {"name": "autoattack-standard", "protocol_version": "1"}
    assert list(aa["stages"]) == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    assert aa["adversarial_accuracy_after_square"] == aa["adversarial_accuracy"]
    rec = json.loads((tmp_path / "autoattack-standard" / "record.json").read_text())
    assert rec["config"]["transfer_config"]["eval_attack"] == "autoattack-standard"


@pytest.mark.parametrize("cmd", ["eval", "transfer", "transfer-sweep", "vulnerability", "synbench", "demo"])
def test_unknown_attack_exits_2_with_the_names_before_any_work(tmp_path, demo_model, capsys, cmd) -> None:
    m, _, _ = demo_model
    ck = save_model(tmp_path / "m.safetensors", m, {"dataset": "demo", "threat": None})
    out = tmp_path / "run"
    argv = {
        "eval": ["eval", "--checkpoint", str(ck), "--eps", "0.1", "--n", "4"],
        "transfer": ["transfer", "--checkpoint", str(ck), "--target", "demo", "--eval-eps", "0.1"],
        "transfer-sweep": ["transfer-sweep", "--sources", str(ck), "--targets", "demo", "--eval-eps", "0.1"],
        "vulnerability": ["vulnerability", "--checkpoint", str(ck), "--eps", "0.1", "--n", "64"],
        "synbench": ["synbench", "--checkpoint", str(ck), "--probe"],
        "demo": ["demo", "--fast"],
    }[cmd]
    capsys.readouterr()
    assert main([*argv, "--attack", "zoo-9000", "--out", str(out), "--quiet"]) == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("robrep: error: unknown attack 'zoo-9000'"), err
    for name in ("pgd", "apgd-t", "fab-t", "square", "autoattack-standard", "autoattack-plus", "autoattack-rand", "fast"):
        assert name in err[0]
    assert not out.exists()


def test_eval_clips_the_targets_of_a_single_attack_and_says_so(tmp_path, demo_model, capsys) -> None:
    m, _, _ = demo_model
    ck = save_model(tmp_path / "m.safetensors", m, {"dataset": "demo", "threat": None})
    argv = ["eval", "--checkpoint", str(ck), "--eps", str(EPS), "--n", "8", "--attack", "apgd-t", "--targets", "15",
            "--steps", "2", "--json", "--quiet", "--device", "cpu"]
    assert main(argv) == 0
    cap = capsys.readouterr()
    assert "note: apgd-t: 15 target classes asked but the model has 10 classes; used 9" in cap.err
    assert json.loads(cap.out.strip().splitlines()[-1])["attack"]["targets"] == 9
