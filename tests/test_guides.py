"""Every guide's commands run, so the guides cannot rot.

Each guide in docs/guides/ is walked in page order: every ``robrep`` command it shows (see
tests/doc_commands.py: shell blocks, ``$ robrep`` lines with their output, ``torchrun -m robrep``)
goes through the parser and :func:`robrep.cli.run_parsed`, exactly what a user's command line
reaches, with its sizes shrunk and its inputs replaced by small ones made here:

* data sets: 1-channel 28x28 ones (MNIST, Fashion-MNIST) become the bundled ``demo``; 3-channel
  ones (CIFAR, SVHN) and image folders become a folder of 60 ``demo`` images written here;
* absolute paths (``/data/...``, ``/shared/...``) move under the test's folder;
* a checkpoint the guide did not make itself becomes a small CNN trained here for the objective
  its name says (``noise``; ``pgd``/``robust``/``trades``/``fast``; else standard);
  ``timm:<name>@<file>`` finds a random-init file of that model written here;
* ``torchrun ... -m robrep CMD`` runs as ``robrep CMD`` in one process (the multi-process runs
  are tested in test_distributed.py);
* ``robrep profile`` runs with every budget size made tiny (``PROFILE_TINY``, passed as
  ``--set``; a 224-px encoder still runs at 224 px, on the stand-in images resized as the card
  states) and a protocol ``--attack`` (minutes at 224 px) becomes PGD;
* a command the page shows failing (``robrep: error: MESSAGE`` on the next line) must fail with
  that message and exit status 2; every other command must succeed.

No command is skipped: a guide whose command cannot run here fails until the guide is fixed.
"""

from __future__ import annotations

import glob
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest

from doc_commands import DocCommand, doc_commands
from robrep.cli import build_parser, run_parsed

ROOT = Path(__file__).resolve().parents[1]
GUIDES = sorted(p.stem for p in (ROOT / "docs" / "guides").glob("*.md"))
SHRINK = {  # option -> tiny value, applied where the command has that option
    "epochs": 1, "eval_n": 16, "eval_steps": 2, "num": 2, "n0": 10, "chunk_size": 1,
    "steps": 3, "search_n": 16, "top_k": 2, "points": 3, "samples": 4, "n_train": 32, "n_test": 32,
    "probe_epochs": 1, "probe_n_train": 64, "probe_eval_n": 32, "restarts": 1, "eval_restarts": 1,
}
SHRINK_BY_COMMAND: dict[str, dict[str, Any]] = {
    "vulnerability": {"n": 64, "preset": "quick", "n_critics": 1, "critic_hidden": 16, "steps": 3, "adv_steps": 2,
                      "attack_steps": 1, "eval_attack_steps": 1, "eval_batches": 1, "batch_size": 16, "patience": 0},
    "transfer-sweep": {"seeds": 1, "fractions": 1, "targets": 1},  # lists: the first k items
}
N_BY_COMMAND = {"certify": 64, "eval": 8, "semantic": 2}  # `--n` means samples for certify, images elsewhere
#: a profile's budget in the walks (every field that sets a size or a step count); mi_n = 20 is the
#: least three-fold cross-fitting takes with batches of 4
PROFILE_TINY = ["probe_train_n=64", "test_n=128", "probe_eval_n=8", "probe_eval_steps=2", "mi_n=20", "mi_critics=1",
                "mi_critic_hidden=16", "mi_steps=3", "mi_adv_steps=3", "mi_batch=4", "mi_attack_steps=1",
                "mi_eval_attack_steps=1", "mi_eval_batches=1", "synbench_n=16", "synbench_scales=0.5,2.5",
                "sensitivity_n=4", "sensitivity_steps=2", "cert_n=2", "cert_n0=8", "cert_samples=16", "picture_n=2",
                "vis_steps=2", "smoothgrad_samples=2"]
GRAY_28 = {"mnist", "fashion-mnist"}
COLOR = {"cifar10", "cifar100", "svhn", "colored-mnist"}
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".tar", ".bin")
#: what the guides that were the first to run for real must still show
MUST_RUN = {"train": {"train"}, "certify": {"train", "certify", "semantic"},
            "see": {"invert", "interpolate", "visualize", "add-feature", "explain", "saliency"},
            "synbench": {"synbench"}, "scale-out": {"eval"}}


# --------------------------------------------------------------------- inputs made once
def _tiny_models(root: Path) -> None:
    from robrep.train import TrainConfig
    from robrep.train import train as run_train

    common = dict(dataset="demo", model="small-cnn", epochs=1, train_fraction=0.03, eval_n=0)
    for name, kw in {"demo-std": {"objective": "standard"}, "demo-pgd": {"objective": "pgd", "eps": 0.1},
                     "demo-noise": {"objective": "noise", "objective_kwargs": {"sigma": 0.25}}}.items():
        run_train(TrainConfig(**common, **kw), root / "runs" / name, show_progress=False)


def _tiny_image_folder(root: Path, per_class: dict[str, int]) -> None:
    """``root/<split>/<class>/<i>.png``: the first images of each class of ``demo``, as RGB."""
    from PIL import Image

    import robrep

    for split, k in per_class.items():
        data = robrep.load_dataset("demo", split)
        x, y = data.tensors()
        for c in range(data.info.num_classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i, img in enumerate(x[y == c][:k]):
                gray = (img[0] * 255).round().byte().numpy()
                Image.fromarray(gray, "L").convert("RGB").save(d / f"{i}.png")


def _timm_file(root: Path, name: str) -> None:
    """Random-init weights of timm model ``name`` (10 classes) as ``root/<name>.safetensors``."""
    timm = pytest.importorskip("timm")
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, num_classes=10)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(root / f"{name}.safetensors"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("guide-inputs")
    _tiny_models(root)
    _tiny_image_folder(root / "images", {"train": 4, "test": 7})  # 70 test images: a profile's held-out split
    return root


# --------------------------------------------------------------------- one command, made small
class Walk:
    """The state of one guide's walk: its folder (the working directory) and the inputs."""

    def __init__(self, work: Path, inputs: Path) -> None:
        self.work, self.inputs = work, inputs

    def path(self, value: str) -> str:
        """An absolute path outside the test's folders moves under the working directory."""
        if value.startswith("/") and not value.startswith((str(self.work), str(self.inputs))):
            return str(self.work / value.lstrip("/"))
        return value

    def data(self, name: str | None) -> str | None:
        if name is None or name == "demo":
            return name
        if name in GRAY_28:
            return "demo"
        scheme, _, rest = name.partition(":")
        if name in COLOR or scheme == "imagefolder":
            size = rest.rpartition("@")[2] if "@" in rest else "32"
            return f"imagefolder:{self.inputs / 'images'}@{size}"
        raise AssertionError(f"no small stand-in for data set {name!r}: add one to tests/test_guides.py")

    def checkpoint(self, value: str) -> str:
        scheme, _, rest = value.partition(":")
        if scheme == "timm" and rest.endswith(".safetensors") and not Path(rest.partition("@")[2]).exists():
            _timm_file(self.work, rest.partition("@")[0])
        if not value.endswith(CHECKPOINT_SUFFIXES) or scheme in ("tv", "timm", "hf", "open_clip"):
            return value  # a model source (robrep.load syntax) is given as it is
        p = Path(self.path(value))
        if p.exists():
            return str(p)
        kind = "noise" if "noise" in value else "pgd" if re.search(r"pgd|robust|trades|fast", value) else "std"
        return str(self.inputs / "runs" / f"demo-{kind}" / "model.safetensors")

    def cards(self, values: list[str]) -> list[str]:
        """Card folders; a glob over cards that a script outside robrep makes matches the cards
        this walk made."""
        out = []
        for v in values:
            if any(ch in v for ch in "*?["):
                out += sorted(glob.glob(v)) or self._cards_of_one_dataset()
            else:
                out.append(v)
        return out

    def _cards_of_one_dataset(self) -> list[str]:
        """The cards this walk made on the data set of the newest one (compare refuses mixed data)."""
        import json

        cards = sorted(self.work.rglob("card.json"), key=lambda p: p.stat().st_mtime)
        name = lambda p: json.loads(p.read_text())["dataset"]["name"]  # noqa: E731
        return sorted(str(p.parent) for p in cards if name(p) == name(cards[-1])) if cards else []

    def shrink(self, args: Any) -> None:
        for key, value in vars(args).items():
            if isinstance(value, str):
                setattr(args, key, self.path(value))
        for key in ("dataset", "target"):
            if hasattr(args, key):
                setattr(args, key, self.data(getattr(args, key)))
        if getattr(args, "targets", None):
            args.targets = list(dict.fromkeys(self.data(t) for t in args.targets))
        for key in ("checkpoint", "source"):
            if isinstance(getattr(args, key, None), str):
                setattr(args, key, self.checkpoint(getattr(args, key)))
        if getattr(args, "sources", None):
            args.sources = [f"{k}={self.checkpoint(v)}" for k, _, v in (s.partition("=") for s in args.sources)]
        if args.command == "compare":
            args.cards = self.cards(args.cards)
        if args.command == "profile":
            args.set = [*args.set, *PROFILE_TINY]
            if args.dataset and args.dataset.startswith("imagefolder:") and "@" in args.dataset:
                args.dataset = args.dataset.rpartition("@")[0] + "@32"  # served at 32 px, resized to the encoder's input
            if getattr(args, "attack", None) not in (None, "pgd"):
                args.attack = "pgd"  # a protocol keeps its own budgets (minutes at 224 px); tests/test_profile_stream.py runs one
        for k, v in SHRINK.items():
            if hasattr(args, k) and not isinstance(getattr(args, k), bool):
                setattr(args, k, v)
        if args.command in N_BY_COMMAND and getattr(args, "n", None) is not None:
            args.n = N_BY_COMMAND[args.command]
        elif getattr(args, "n", None) is not None:
            args.n = 2
        if getattr(args, "dataset", None) == "demo" and hasattr(args, "train_fraction"):
            args.train_fraction = 0.03  # image folders written here are small already
        for k, v in SHRINK_BY_COMMAND.get(args.command, {}).items():
            if hasattr(args, k):
                setattr(args, k, getattr(args, k)[:v] if isinstance(getattr(args, k), list) else v)
        if args.command == "semantic":
            args.eps, args.delta = 0.1, 0.05
        if hasattr(args, "threads"):
            args.threads = 1

    def run(self, cmd: DocCommand, capsys: pytest.CaptureFixture[str]) -> str:
        args = build_parser().parse_args(shlex.split(cmd.line)[1:])
        self.shrink(args)
        capsys.readouterr()
        code = run_parsed(args)
        err = capsys.readouterr().err
        if cmd.error is None:
            assert code == 0, f"{cmd.line}\n{err}"
        else:  # the page shows this failure: the same message (up to the first path, which is the machine's)
            assert code == 2, f"{cmd.line}: the page shows it failing, but it exited {code}\n{err}"
            shown = cmd.error.split("/")[0]
            assert f"robrep: error: {shown}" in err, f"{cmd.line}: the page shows\n  {cmd.error}\nbut it said\n  {err}"
        return str(args.command)


# --------------------------------------------------------------------- the walks
def _guide_commands(guide: str) -> list[DocCommand]:
    return [c for c in doc_commands((ROOT / "docs" / "guides" / f"{guide}.md").read_text(encoding="utf-8"))
            if "..." not in c.line]


def test_every_guide_shows_commands_and_the_walk_covers_them() -> None:
    commands = {g: {shlex.split(c.line)[1] for c in _guide_commands(g)} for g in GUIDES}
    assert set(MUST_RUN) <= set(GUIDES), set(MUST_RUN) - set(GUIDES)
    assert not [g for g, cs in commands.items() if not cs], "every guide shows at least one robrep command"
    for g, must in MUST_RUN.items():
        assert must <= commands[g], (g, must - commands[g])


@pytest.mark.parametrize("guide", GUIDES)
def test_guide_commands_run_on_tiny_sizes(guide: str, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from robrep import runtime

    monkeypatch.setenv("ROBREP_PROGRESS", "0")
    for var in ("TORCH_HOME", "HF_HOME", "HF_HUB_CACHE"):  # caches hold nothing: offline messages are the pages'
        monkeypatch.setenv(var, str(tmp_path / "cache" / var.lower()))
    monkeypatch.chdir(tmp_path)  # the guides write under runs/
    for model in (inputs / "runs").glob("*/model.safetensors"):  # the runs a guide may expect from another one
        (tmp_path / "runs" / model.parent.name).mkdir(parents=True)
        shutil.copy(model, tmp_path / "runs" / model.parent.name / model.name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest, and robust to a busy machine
    walk, ran = Walk(tmp_path, inputs), []
    try:
        for cmd in _guide_commands(guide):
            ran.append(walk.run(cmd, capsys))
    finally:
        torch.set_num_threads(threads)
        runtime._reset_for_tests()
    assert ran, f"{guide}: no command ran"
    assert MUST_RUN.get(guide, set()) <= set(ran), ran


def test_doc_commands_reads_every_form() -> None:
    page = "\n".join([
        "```bash", "OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 -m robrep certify --sigma 0.25 \\", "    --out a  # two ranks",
        "robrep eval --n 3 | tee log", "echo robrep train", "```",
        "```text", "$ robrep eval --checkpoint x:y", "robrep: error: unknown scheme 'x'; use tv:", "robrep eval --n 9", "```",
        "```", "robrep vulnerability --eps 0.3", "robrep: resizing", "```",
        "Some prose.", "", "    $ robrep saliency --n 8", "    robrep: error: no such file /tmp/a", "",
        "    robrep list models",
    ])
    assert doc_commands(page) == [
        DocCommand("robrep certify --sigma 0.25 --out a"), DocCommand("robrep eval --n 3"),
        DocCommand("robrep eval --checkpoint x:y", "unknown scheme 'x'; use tv:"),
        DocCommand("robrep vulnerability --eps 0.3"), DocCommand("robrep saliency --n 8", "no such file /tmp/a"),
    ]
