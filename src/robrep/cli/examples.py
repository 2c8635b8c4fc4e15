"""Worked examples shown at the end of each command's ``--help`` (and in the CLI reference).

One entry per command: two or three command lines a newcomer can copy. ``tests/test_docs.py``
parses every line with the real parser, so an example cannot name an option that does not
exist. A command whose module sets its own ``epilog`` keeps it.
"""

from __future__ import annotations

__all__ = ["EXAMPLES", "epilog"]

# checkpoints in these examples are the ones `robrep train ... --out runs/NAME` writes
EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "list": [
        ("everything that can be named on the command line", "robrep list"),
        ("only the attacks, as JSON", "robrep list attacks --json"),
    ],
    "train": [
        ("a PGD-trained small CNN on the bundled data (a minute on a laptop CPU)",
         "robrep train --dataset demo --model small-cnn --objective pgd --eps 0.1 --epochs 2 --out runs/demo-pgd"),
        ("Madry et al.'s MNIST recipe at eps 0.3 (ROBREP_DATA must hold MNIST/raw)",
         "robrep train --dataset mnist --model small-cnn --objective pgd --eps 0.3 --epochs 10 --out runs/mnist-pgd"),
        ("continue an interrupted run where it stopped", "robrep train --dataset mnist --model small-cnn --objective pgd --eps 0.3 --epochs 10 --out runs/mnist-pgd --resume"),
    ],
    "eval": [
        ("clean and PGD robust accuracy of a checkpoint", "robrep eval --checkpoint runs/demo-pgd/model.safetensors --eps 0.1 --n 500"),
        ("APGD-CE then APGD-DLR on all test images, in saved chunks (rerun to continue)",
         "robrep eval --checkpoint runs/mnist-pgd/model.safetensors --attack apgd --eps 0.3 --out runs/mnist-pgd/eval-apgd --resume"),
        ("an l2 threat, JSON on the last line", "robrep eval --checkpoint runs/demo-pgd/model.safetensors --norm l2 --eps 1.0 --json"),
    ],
    "attack": [
        ("16 adversarial examples and a clean/adversarial/perturbation grid",
         "robrep attack --checkpoint runs/demo-pgd/model.safetensors --eps 0.1 --n 16 --out runs/demo-pgd/attack"),
        ("the same with APGD", "robrep attack --checkpoint runs/demo-pgd/model.safetensors --attack apgd --eps 0.1 --out runs/demo-pgd/attack-apgd"),
    ],
    "report": [
        ("one report comparing two runs", "robrep report runs/demo-std runs/demo-pgd --out report.html"),
        ("with a title", "robrep report runs/* --title 'MNIST, linf 0.3' --out runs/report.html"),
    ],
    "demo": [
        ("the full demo: two encoders trained, measured and shown in robrep-demo/report.html", "robrep demo"),
        ("a much smaller run, for a quick check", "robrep demo --fast --out /tmp/robrep-demo"),
        ("robust accuracy by the fast protocol (APGD-CE, APGD-T on 3 targets, Square on the points nearest the boundary) instead of PGD-20",
         "robrep demo --fast --attack fast --out /tmp/robrep-demo-fast"),
    ],
    "invert": [
        ("invert the penultimate layer of 8 test images from noise",
         "robrep invert --checkpoint runs/demo-pgd/model.safetensors --n 8 --steps 500 --out runs/demo-pgd/invert"),
        ("start from other test images and keep the best iterate", "robrep invert --checkpoint runs/demo-pgd/model.safetensors --start other --use-best --steps 500"),
    ],
    "visualize": [
        ("inputs that maximize components 0-3, and the test images that activate them most",
         "robrep visualize --checkpoint runs/demo-pgd/model.safetensors --components 0,1,2,3 --out runs/demo-pgd/visualize"),
        ("fewer steps and a smaller search", "robrep visualize --checkpoint runs/demo-pgd/model.safetensors --steps 50 --search-n 200"),
    ],
    "add-feature": [
        ("push component 7 of 8 test images up to the largest activation seen on test data",
         "robrep add-feature --checkpoint runs/demo-pgd/model.safetensors --component 7 --out runs/demo-pgd/add-feature"),
        ("to an explicit target activation", "robrep add-feature --checkpoint runs/demo-pgd/model.safetensors --component 7 --target 5.0 --steps 200"),
    ],
    "interpolate": [
        ("invert 10 interpolations between pairs of test images",
         "robrep interpolate --checkpoint runs/demo-pgd/model.safetensors --n 4 --points 10 --steps 500 --out runs/demo-pgd/interpolate"),
        ("fewer points, fewer steps", "robrep interpolate --checkpoint runs/demo-pgd/model.safetensors --points 5 --steps 200"),
    ],
    "explain": [
        ("components behind each misclassification, and the input pushed along them",
         "robrep explain --checkpoint runs/demo-pgd/model.safetensors --n 8 --out runs/demo-pgd/explain"),
        ("the top 5 components", "robrep explain --checkpoint runs/demo-pgd/model.safetensors --k 5 --steps 100"),
    ],
    "saliency": [
        ("input-gradient and SmoothGrad maps of 8 test images",
         "robrep saliency --checkpoint runs/demo-pgd/model.safetensors --n 8 --out runs/demo-pgd/saliency"),
        ("SmoothGrad with more samples and less noise", "robrep saliency --checkpoint runs/demo-pgd/model.safetensors --samples 100 --noise-level 0.1"),
    ],
    "certify": [
        ("Cohen et al.'s certificate of a noise-trained model, first 100 test images",
         "robrep certify --checkpoint runs/demo-noise/model.safetensors --sigma 0.25 --num 100 --n 1000 --out runs/demo-noise/certify"),
        ("first-order certificates (l2, l1, linf radii), resumable in chunks",
         "robrep certify --checkpoint runs/demo-noise/model.safetensors --sigma 0.25 --order 1 --num 500 --out runs/cert-o1 --resume"),
    ],
    "transfer": [
        ("fixed-feature transfer (linear probe) of a source model to MNIST",
         "robrep transfer --checkpoint runs/demo-pgd/model.safetensors --target mnist --epochs 2 --out runs/transfer-mnist"),
        ("full fine-tuning on 10 % of the target, with adversarial accuracy at linf 0.1",
         "robrep transfer --checkpoint runs/demo-pgd/model.safetensors --target mnist --mode full --target-fraction 0.1 --eval-eps 0.1"),
        ("adversarial accuracy of the transferred model by the AutoAttack standard",
         "robrep transfer --checkpoint runs/demo-pgd/model.safetensors --target mnist --eval-eps 0.1 --attack autoattack-standard"),
    ],
    "transfer-sweep": [
        ("every source to every target in both modes, 3 seeds (resumable: rerun to continue)",
         "robrep transfer-sweep --sources runs/demo-std/model.safetensors runs/demo-pgd/model.safetensors --targets mnist --out runs/sweep"),
        ("one seed, fixed-feature only", "robrep transfer-sweep --sources runs/demo-pgd/model.safetensors --targets mnist --modes fixed --seeds 0 --epochs 2"),
    ],
    "vulnerability": [
        ("vulnerability of the penultimate layer at linf 0.1 and the accuracy bound",
         "robrep vulnerability --checkpoint runs/demo-pgd/model.safetensors --eps 0.1 --out runs/demo-pgd/vulnerability"),
        ("a quick, smaller estimate", "robrep vulnerability --checkpoint runs/demo-pgd/model.safetensors --eps 0.1 --num-images 500 --steps 100"),
        ("two layers x two radii as four resumable cells (torchrun deals them to its ranks)",
         "robrep vulnerability --checkpoint runs/demo-pgd/model.safetensors --layer penultimate,logits --eps 0.05 0.1 "
         "--out runs/demo-pgd/vulnerability-cells --resume"),
        ("the linear probe's robust accuracy by the fast protocol",
         "robrep vulnerability --checkpoint runs/demo-pgd/model.safetensors --eps 0.1 --num-images 500 --attack fast"),
    ],
    "synbench": [
        ("the SynBench score of the penultimate layer",
         "robrep synbench --checkpoint runs/demo-pgd/model.safetensors --out runs/demo-pgd/synbench"),
        ("smaller synthetic sets, then an eps-robust linear probe on the real data",
         "robrep synbench --checkpoint runs/demo-pgd/model.safetensors --n-train 512 --n-test 512 --probe --dataset demo"),
        ("continue an interrupted run: the finished scales in --out are kept (torchrun deals the others to its ranks)",
         "robrep synbench --checkpoint runs/demo-pgd/model.safetensors --out runs/demo-pgd/synbench --resume"),
    ],
    "profile": [
        ("the robustness card of a trained model on the bundled data, quick budget",
         "robrep profile runs/demo-pgd/model.safetensors --dataset demo --eps 0.1 --out cards/demo-pgd"),
        ("a torchvision ResNet-18 with random weights, as a reference card",
         "robrep profile init:tv:resnet18 --dataset demo --eps 0.1 --input-shape 3 64 64 --out cards/resnet18-init"),
        ("a random-weight small CNN at the quick budget with a smaller probe evaluation",
         "robrep profile init:small-cnn --dataset demo --budget quick --set probe_eval_n=50 --out cards/init"),
    ],
    "list-layers": [
        ("the representation names of a trained model and their shapes",
         "robrep list-layers runs/demo-pgd/model.safetensors"),
        ("a torchvision ResNet-18 (random weights) at 224 px, aliases only, as JSON",
         "robrep list-layers tv:resnet18 --input-shape 3 224 224 --no-modules --json"),
    ],
    "compare": [
        ("one leaderboard page (sortable table, curves, pictures) of several cards",
         "robrep compare cards/demo-pgd cards/resnet18-init --out cards/compare"),
        ("rank by another headline number",
         "robrep compare cards/demo-pgd cards/resnet18-init --out cards/compare --rank-by synbench_score"),
    ],
    "semantic": [
        ("the smallest brightness change that flips each of 20 test images (attack only)",
         "robrep semantic --checkpoint runs/demo-pgd/model.safetensors --transform brightness --n 20"),
        ("attack and verify rotations up to 10 degrees",
         "robrep semantic --checkpoint runs/demo-pgd/model.safetensors --transform rotation --eps 10 --n 20 --verify --out runs/demo-pgd/semantic"),
    ],
}


def epilog(command: str) -> str | None:
    """The examples of ``command`` as an epilog text, or ``None`` if it has none."""
    rows = EXAMPLES.get(command)
    if not rows:
        return None
    lines = ["examples:"]
    for what, cmd in rows:
        lines += [f"  # {what}", f"  {cmd}"]
    return "\n".join(lines)
