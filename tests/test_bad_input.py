"""Bad input: a table of bad inputs across the API and the CLI. Each must give a clear,
one-line robrep error (CLI: ``robrep: error: ...`` on stderr, exit status 2, no traceback, no JSON
on stdout) that names the problem, and must leave every existing good file untouched."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import robrep
from robrep.cli import main as cli_main
from robrep.errors import RobrepError

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------
# fixtures: a good checkpoint, a good run folder, a 3-channel image folder, bad files


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Any]:
    from PIL import Image

    root = tmp_path_factory.mktemp("bad_input")
    model = robrep.create_model("small-cnn", dataset="demo", width=4, feat_dim=8)
    good_ck = root / "good" / "model.safetensors"
    robrep.save_model(good_ck, model, {"dataset": "demo", "threat": {"norm": "linf", "eps": 0.1}})
    (root / "good" / "record.json").write_text('{"metrics": {"clean_accuracy": 0.5}}\n')
    # a 3-channel image folder (2 classes x 3 images) for channel mismatches
    g = torch.Generator().manual_seed(0)
    for cls in ("a", "b"):
        d = root / "rgb" / "train" / cls
        d.mkdir(parents=True)
        for i in range(3):
            arr = (torch.rand(28, 28, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(arr, "RGB").save(d / f"{i}.png")
    bad = root / "bad"
    bad.mkdir()
    (bad / "random.pt").write_bytes(os.urandom(2048))
    raw = good_ck.read_bytes()
    (bad / "truncated.safetensors").write_bytes(raw[: len(raw) // 2])
    (bad / "empty.pt").write_bytes(b"")
    (bad / "emptydir").mkdir()
    other = robrep.create_model("mlp", dataset="demo", hidden=8)
    robrep.save_model(bad / "mlp.safetensors", other, {"dataset": "demo"})
    torch.save(robrep.create_model("resnet18", input_shape=(3, 32, 32), width=4).net.state_dict(), bad / "resnet.pt")
    (bad / "not_a_dir").write_text("a regular file where a folder is expected\n")
    x, y = robrep.load_dataset("demo", "test").head(8).tensors()
    return {"root": root, "model": model, "ck": good_ck, "good": root / "good", "rgb": root / "rgb",
            "bad": bad, "x": x, "y": y}


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------
# API rows: (id, call(world), expected regex in the message)


def _eval(w, x=None, y=None, **kw):
    return robrep.evaluate(w["model"], (w["x"] if x is None else x, w["y"] if y is None else y), **kw)


class _Scaled(torch.nn.Module):
    """The model with its logits multiplied by ``k`` (NaN or inf: non-finite logits)."""

    def __init__(self, base: torch.nn.Module, k: float) -> None:
        super().__init__()
        self.base, self.k = base, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) * self.k


class _Noisy(_Scaled):
    """A randomized model: noise on the input at every call."""

    def __init__(self, base: torch.nn.Module) -> None:
        super().__init__(base, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base((x + 0.2 * torch.randn_like(x)).clamp(0, 1))


def _transfer_config(**kw):
    from robrep.transfer import TransferConfig

    return TransferConfig(**kw)


def _eval_model(w, model, **kw):
    return robrep.evaluate(model, (w["x"], w["y"]), threat=robrep.threat("linf", 0.1), **kw)


def _certify_small_n(w):
    from robrep.certify import smoothing

    return smoothing.certify(w["model"], w["x"][0], sigma=0.25, n0=5, n=5, alpha=0.001)


API_ROWS: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("images without batch dim", lambda w: _eval(w, x=w["x"][0]), r"shape \(N, C, H, W\)"),
    ("wrong channel count", lambda w: _eval(w, x=w["x"].repeat(1, 3, 1, 1)), r"3 channels but model .* expects 1"),
    ("NaN pixels", lambda w: _eval(w, x=torch.where(w["x"] > 0.5, math.nan, w["x"])), r"NaN or inf"),
    ("inf pixels", lambda w: _eval(w, x=w["x"] + torch.tensor(math.inf)), r"NaN or inf"),
    ("pixels in [0,255]", lambda w: _eval(w, x=w["x"] * 255), r"\[0,1\]"),
    ("normalized pixels (negative)", lambda w: _eval(w, x=(w["x"] - 0.5) / 0.5), r"\[0,1\]"),
    ("empty image batch", lambda w: _eval(w, x=w["x"][:0], y=w["y"][:0]), r"empty"),
    ("uint8 images", lambda w: _eval(w, x=(w["x"] * 255).to(torch.uint8)), r"float in \[0,1\]"),
    ("labels out of range", lambda w: _eval(w, y=w["y"] + 10), r"labels .* range"),
    ("x and y lengths differ", lambda w: _eval(w, y=w["y"][:3]), r"8 images but 3 labels"),
    ("n = 0", lambda w: _eval(w, n=0), r"n must be positive"),
    ("negative eps", lambda w: robrep.threat("linf", -0.1), r"eps must be"),
    ("NaN eps", lambda w: robrep.threat("l2", math.nan), r"eps must be"),
    ("absurd linf eps in training (8 meant 8/255)",
     lambda w: robrep.train(robrep.TrainConfig(objective="pgd", eps=8.0), w["good"], show_progress=False), r"8/255"),
    ("unknown norm", lambda w: robrep.threat("l3", 0.1), r"l3"),
    ("unknown model", lambda w: robrep.create_model("resnet-9000"), r"resnet-9000"),
    ("unknown torchvision model", lambda w: robrep.create_model("tv:resnet9000"), r"torchvision has no classifier"),
    ("unknown dataset", lambda w: robrep.load_dataset("imagenet-42", "test"), r"imagenet-42"),
    ("unknown split", lambda w: robrep.load_dataset("demo", "validation"), r"split"),
    ("unknown attack", lambda w: robrep.create_attack("pgd-9000"), r"pgd-9000"),
    ("unknown layer", lambda w: robrep.models.representation(w["model"], "conv9"), r"no layer 'conv9'"),
    ("unknown training option", lambda w: robrep.TrainConfig.from_dict({"epochz": 3}), r"epochz"),
    ("empty dataset fraction", lambda w: robrep.load_dataset("demo", "test").fraction(0.0), r"fraction"),
    ("empty dataset", lambda w: robrep.data.TensorImageData(w["x"][:0], w["y"][:0], robrep.data.dataset_info("demo"), "test"),
     r"empty"),
    ("corrupt checkpoint", lambda w: robrep.load(w["bad"] / "random.pt"), r"unknown checkpoint format|corrupt"),
    ("truncated checkpoint", lambda w: robrep.load(w["bad"] / "truncated.safetensors"), r"truncated or corrupt"),
    ("checkpoint of another arch", lambda w: robrep.load(w["bad"] / "resnet.pt", arch="small-cnn"), r"does not fit"),
    ("save into a file path", lambda w: robrep.save_model(w["bad"] / "not_a_dir" / "m.safetensors", w["model"]),
     r"cannot write in"),
    ("certify: n too small for alpha", _certify_small_n, r"n=5 is too small for alpha=0.001"),
    ("non-finite logits under a single attack", lambda w: _eval_model(w, _Scaled(w["model"], math.nan), attack="pgd"),
     r"non-finite logits"),
    ("non-finite logits under a protocol", lambda w: _eval_model(w, _Scaled(w["model"], math.inf), attack="fast"),
     r"non-finite logits"),
    ("randomized model under a deterministic protocol",
     lambda w: _eval_model(w, _Noisy(w["model"]), attack="autoattack-standard"), r"randomized-output.*autoattack-rand"),
    ("square budget 0", lambda w: robrep.attacks.square(w["model"], w["x"], w["y"], robrep.threat("linf", 0.1), queries=0),
     r"query budget > 0"),
    ("target count 0", lambda w: robrep.attacks.run_protocol("fast", w["model"], w["x"], w["y"], robrep.threat("linf", 0.1),
                                                             targets=0), r"target classes must be >= 1"),
    ("l1 under a protocol without an l1 version",
     lambda w: _eval(w, threat=robrep.threat("l1", 5.0), attack="fast"), r"not l1; for l1 use autoattack-standard"),
    ("absurd linf eps in transfer (8 meant 8/255)",
     lambda w: _transfer_config(eval_eps=8.0), r"8/255"),
    ("unknown attack of transfer", lambda w: _transfer_config(eval_eps=0.1, eval_attack="pgd-9000"),
     r"unknown attack .pgd-9000.*autoattack-standard"),
]


@pytest.mark.parametrize("row", API_ROWS, ids=[r[0] for r in API_ROWS])
def test_api_bad_input(world, row):
    _, call, pattern = row
    before = _snapshot(world["root"])
    with pytest.raises(RobrepError) as ei:
        call(world)
    msg = str(ei.value)
    assert msg and "\n" not in msg, msg
    assert _re_search(pattern, msg), msg
    assert _snapshot(world["root"]) == before


def _re_search(pattern: str, msg: str) -> bool:
    import re

    return re.search(pattern, msg) is not None


# ------------------------------------------------------------------------------------------
# CLI rows: (id, argv builder, expected regex in the error line)

TRAIN = ["train", "--dataset", "demo", "--model-arg", "width=4", "--model-arg", "feat_dim=8", "--epochs", "1",
         "--train-fraction", "0.02", "--eval-n", "0", "--quiet", "--device", "cpu"]


def _eval_cli(w, *extra):
    return ["eval", "--checkpoint", str(w["ck"]), "--n", "4", "--quiet", "--device", "cpu", "--json", *extra]


CLI_ROWS: list[tuple[str, Callable[[dict[str, Any]], list[str]], str]] = [
    ("eval: missing checkpoint", lambda w: ["eval", "--checkpoint", str(w["root"] / "nope.safetensors"), "--json"], r"does not exist"),
    ("eval: corrupt checkpoint", lambda w: ["eval", "--checkpoint", str(w["bad"] / "random.pt"), "--dataset", "demo"],
     r"unknown checkpoint format|corrupt"),
    ("eval: truncated checkpoint", lambda w: ["eval", "--checkpoint", str(w["bad"] / "truncated.safetensors")], r"truncated"),
    ("eval: empty checkpoint", lambda w: ["eval", "--checkpoint", str(w["bad"] / "empty.pt")], r"empty \(0 bytes\)"),
    ("eval: folder without model", lambda w: ["eval", "--checkpoint", str(w["bad"] / "emptydir")], r"without model.safetensors"),
    ("eval: checkpoint of another arch", lambda w: ["eval", "--checkpoint", str(w["bad"] / "mlp.safetensors"), "--arch", "small-cnn"],
     r"holds a 'mlp' model"),
    ("eval: state dict for another arch", lambda w: ["eval", "--checkpoint", str(w["bad"] / "resnet.pt"), "--arch", "small-cnn",
                                                     "--dataset", "demo"], r"does not fit"),
    ("eval: negative eps", lambda w: _eval_cli(w, "--eps", "-0.1"), r"eps must be"),
    ("eval: absurd eps", lambda w: _eval_cli(w, "--eps", "8"), r"8/255"),
    ("eval: NaN eps", lambda w: _eval_cli(w, "--eps", "nan"), r"eps must be"),
    ("eval: unknown dataset", lambda w: _eval_cli(w, "--dataset", "mnist-9000"), r"mnist-9000"),
    ("eval: unknown attack", lambda w: _eval_cli(w, "--attack", "zoo-attack-9000"), r"zoo-attack-9000"),
    ("eval: n = 0", lambda w: _eval_cli(w, "--n", "0"), r"n must be positive"),
    ("eval: 3-channel data, 1-channel model", lambda w: _eval_cli(w, "--dataset", f"imagefolder:{w['rgb']}@28", "--split", "train"),
     r"3 channels but model 'small-cnn' expects 1"),
    ("eval: unwritable --out (disk full / read-only)", lambda w: _eval_cli(w, "--out", str(w["bad"] / "not_a_dir" / "run")),
     r"cannot write"),
    ("eval: untrusted pickle", lambda w: ["eval", "--checkpoint", str(w["root"] / "evil.pt"), "--arch", "small-cnn"],
     r"--trust-checkpoint"),
    ("attack: n = 0", lambda w: ["attack", "--checkpoint", str(w["ck"]), "--n", "0", "--out", str(w["good"]), "--device", "cpu"],
     r"n must be positive"),
    ("attack: negative eps", lambda w: ["attack", "--checkpoint", str(w["ck"]), "--eps", "-1", "--out", str(w["good"])], r"eps must be"),
    ("train: epochs 0", lambda w: [*TRAIN, "--epochs", "0", "--out", str(w["good"])], r"epochs and batch_size must be >= 1"),
    ("train: batch size 0", lambda w: [*TRAIN, "--batch-size", "0", "--out", str(w["good"])], r"batch_size must be >= 1"),
    ("train: NaN lr", lambda w: [*TRAIN, "--lr", "nan", "--out", str(w["good"])], r"lr must be a positive number"),
    ("train: negative lr", lambda w: [*TRAIN, "--lr", "-0.1", "--out", str(w["good"])], r"lr must be a positive number"),
    ("train: unknown model", lambda w: [*TRAIN, "--model", "resnet-9000", "--out", str(w["good"])], r"resnet-9000"),
    ("train: unknown objective", lambda w: [*TRAIN, "--objective", "magic", "--out", str(w["good"])], r"magic"),
    ("train: pgd without eps", lambda w: [*TRAIN, "--objective", "pgd", "--out", str(w["good"])], r"needs a threat model"),
    ("train: bad model option", lambda w: [*TRAIN, "--model-arg", "depth=3", "--out", str(w["good"])], r"bad options for model"),
    ("train: malformed option", lambda w: [*TRAIN, "--objective-arg", "beta", "--out", str(w["good"])], r"key=value"),
    ("train: empty dataset (fraction 0)", lambda w: [*TRAIN, "--train-fraction", "0", "--out", str(w["good"])], r"fraction"),
    ("train: missing config file", lambda w: [*TRAIN, "--config", str(w["root"] / "nope.json"), "--out", str(w["good"])],
     r"cannot read config"),
    ("train: unwritable --out", lambda w: [*TRAIN, "--out", str(w["bad"] / "not_a_dir" / "run")], r"cannot write|not a directory"),
    ("train: absurd eps", lambda w: [*TRAIN, "--objective", "pgd", "--eps", "76.5", "--out", str(w["good"])], r"8/255|\[0,1\]"),
    ("certify: n too small for alpha", lambda w: ["certify", "--checkpoint", str(w["ck"]), "--sigma", "0.25", "--num", "2",
                                                   "--n0", "5", "--n", "5", "--alpha", "0.001", "--out", str(w["good"]),
                                                   "--device", "cpu"], r"too small for alpha"),
    ("eval: square budget 0", lambda w: _eval_cli(w, "--eps", "0.1", "--attack", "square", "--queries", "0"), r"must be > 0"),
    ("eval: target count 0", lambda w: _eval_cli(w, "--eps", "0.1", "--attack", "autoattack-standard", "--targets", "0"),
     r"--targets .* must be >= 1"),
    ("eval: l1 under a protocol without an l1 version",
     lambda w: _eval_cli(w, "--norm", "l1", "--eps", "5", "--attack", "fast", "--out", str(w["good"])),
     r"for l1 use autoattack-standard"),
    ("transfer: absurd eval eps", lambda w: ["transfer", "--checkpoint", str(w["ck"]), "--target", "demo", "--eval-eps", "8",
                                             "--out", str(w["good"])], r"8/255"),
    ("transfer: unknown attack", lambda w: ["transfer", "--checkpoint", str(w["ck"]), "--target", "demo", "--eval-eps", "0.1",
                                            "--attack", "zoo-attack-9000", "--out", str(w["good"])], r"zoo-attack-9000"),
    ("demo: unknown attack", lambda w: ["demo", "--fast", "--attack", "zoo-attack-9000", "--out", str(w["good"])],
     r"zoo-attack-9000"),
]


@pytest.fixture(scope="module")
def evil(world):
    class _Evil:
        def __reduce__(self):
            return (Path.touch, (world["root"] / "PWNED",))

    torch.save({"state_dict": {}, "x": _Evil()}, world["root"] / "evil.pt")
    yield world["root"] / "evil.pt"


@pytest.mark.parametrize("row", CLI_ROWS, ids=[r[0] for r in CLI_ROWS])
def test_cli_bad_input(world, evil, row, capsys):
    _, argv, pattern = row
    before = _snapshot(world["root"])
    capsys.readouterr()
    rc = cli_main(argv(world))
    cap = capsys.readouterr()
    assert rc == 2, (rc, cap.err[-500:])
    lines = [ln for ln in cap.err.strip().splitlines() if ln.strip()]
    assert lines, "no error message"
    err = lines[-1]
    assert err.startswith("robrep: error: "), cap.err[-500:]
    assert "Traceback" not in cap.err
    assert _re_search(pattern, err), err
    assert not cap.out.strip().startswith("{") and '"clean_accuracy"' not in cap.out  # no result printed
    assert _snapshot(world["root"]) == before, "a good file was changed or a file was added"
    assert not (world["root"] / "PWNED").exists()


def test_table_size():
    """The issue asks for at least 25 bad inputs across CLI and API."""
    assert len(API_ROWS) + len(CLI_ROWS) >= 25 and len(CLI_ROWS) >= 10 and len(API_ROWS) >= 10


def test_argparse_type_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as ei:
        cli_main(["eval", "--checkpoint", "x", "--eps", "abc"])
    assert ei.value.code == 2
    assert "invalid float value: 'abc'" in capsys.readouterr().err.strip().splitlines()[-1]


def test_good_input_still_works(world, capsys):
    """Control: the same fixtures with good input succeed (so the table tests the bad part only)."""
    assert cli_main(_eval_cli(world, "--eps", "0.05", "--steps", "2")) == 0
    r = robrep.evaluate(world["model"], (world["x"], world["y"]), threat=robrep.threat("linf", 1.0), attack_kwargs={"steps": 1})
    assert r.n == 8 and 0 <= r.clean_accuracy <= 1
