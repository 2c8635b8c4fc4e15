"""The CLI end to end: train -> eval -> attack -> list, JSON last line, errors."""

from __future__ import annotations

import json

import pytest

from robrep.cli import main


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_train_eval_attack(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    rc = main(["train", "--dataset", "demo", "--objective", "fast", "--eps", "0.1", "--epochs", "1", "--train-fraction", "0.1",
               "--eval-n", "100", "--out", str(run), "--quiet", "--json"])
    assert rc == 0
    res = _last_json(capsys.readouterr().out)
    assert {"checkpoint", "test_clean_accuracy", "test_robust_accuracy"} <= set(res)
    ck = run / "model.safetensors"
    assert (run / "record.json").is_file() and ck.is_file()

    rc = main(["eval", "--checkpoint", str(ck), "--n", "50", "--steps", "5", "--json", "--quiet"])
    assert rc == 0
    ev = _last_json(capsys.readouterr().out)
    assert ev["n"] == 50 and 0 <= ev["robust_accuracy"] <= ev["clean_accuracy"] <= 1
    assert ev["threat"] == {"norm": "linf", "eps": 0.1}  # taken from the checkpoint

    out = tmp_path / "atk"
    rc = main(["attack", "--checkpoint", str(ck), "--n", "8", "--eps", "0.2", "--steps", "10", "--out", str(out), "--json", "--quiet"])
    assert rc == 0
    at = _last_json(capsys.readouterr().out)
    assert at["max_perturbation"] <= 0.2 + 1e-6
    assert (out / "attack_grid.png").stat().st_size > 0 and (out / "adversarial.safetensors").is_file()


def test_list_json(capsys) -> None:
    assert main(["list", "models", "--json"]) == 0
    res = _last_json(capsys.readouterr().out)
    assert "mnist-cnn" in res["models"] and "tv:<name>" in res["models"]


@pytest.mark.parametrize("argv,needle", [
    (["eval", "--checkpoint", "/nonexistent.safetensors"], "does not exist"),
    (["train", "--model", "resnet-999", "--epochs", "1"], "unknown model"),
    (["train", "--dataset", "demo", "--objective", "pgd", "--eps", "-1"], "eps"),
])
def test_errors_are_one_line_and_exit_2(argv, needle, capsys) -> None:
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and err.startswith("robrep: error:")


@pytest.mark.parametrize("cmd", [["eval"], ["attack", "--n", "2"], ["certify", "--sigma", "0.25"], ["vulnerability", "--eps", "0.1"],
                                 ["semantic", "--transform", "brightness"], ["saliency"]])
def test_checkpoint_without_dataset_asks_for_dataset(tmp_path, capsys, cmd) -> None:
    from robrep.models import create_model, save_model

    ck = tmp_path / "m.safetensors"
    save_model(ck, create_model("small-cnn", dataset="mnist"))  # no meta: the data set is unknown
    rc = main([*cmd, "--checkpoint", str(ck), "--quiet"])
    assert rc == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("the checkpoint does not record its dataset: pass --dataset")
