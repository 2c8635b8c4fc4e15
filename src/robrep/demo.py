"""The main job: train a standard and a robust encoder on the bundled demo data, measure and
show both, and write one HTML report.

Every measurement robrep offers is wired in here as it lands; each stage writes its JSON and
figures into the run folder, and :func:`robrep.report.write_report` gathers them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .data import load_dataset
from .evaluate import evaluate
from .io.atomic import atomic_write_json
from .report import amplify, save_image_grid
from .runs import write_record
from .threats import threat
from .train import TrainConfig, train

__all__ = ["DemoResult", "run_demo", "DEMO_EPS"]

DEMO_EPS = 0.1  # linf radius on Fashion-MNIST pixels


@dataclass(frozen=True)
class DemoResult:
    out: Path
    report: Path
    summary: dict[str, Any]
    table: str


def run_demo(out: str | Path = "robrep-demo", *, fast: bool = False, device: str = "auto", seed: int = 0,
             show_progress: bool = True, log: Callable[[str], None] | None = None) -> DemoResult:
    """Run the demo into ``out`` and return where its report is."""
    from .report.html import write_report

    log = log or (lambda s: None)
    out = Path(out)
    t0 = time.time()
    tr, te = load_dataset("demo", "train"), load_dataset("demo", "test")
    if fast:
        tr, te = tr.fraction(0.2, seed=seed), te.head(200)
    epochs = 2 if fast else 8
    thr = threat("linf", DEMO_EPS)
    runs: dict[str, Path] = {}
    summary: dict[str, Any] = {"eps": DEMO_EPS, "norm": "linf", "models": {}}
    for name, objective in (("standard", "standard"), ("robust", "pgd")):
        cfg = TrainConfig(model="small-cnn", dataset="demo", objective=objective, eps=DEMO_EPS if objective != "standard" else 0.0,
                          epochs=epochs, batch_size=64, lr=0.05, seed=seed, device=device, eval_n=0,
                          objective_kwargs={"steps": 5} if objective == "pgd" else {})
        log(f"[demo] training the {name} model ({objective}) ...")
        res = train(cfg, out / name, train_data=tr, test_data=te, show_progress=show_progress)
        model = res.model
        runs[name] = out / name
        ev = evaluate(model, te, threat=thr, attack="pgd", attack_kwargs={"steps": 20}, seed=seed)
        curve = [(0.0, ev.clean_accuracy)]
        for e in (0.05, DEMO_EPS, 0.15):
            r = evaluate(model, te, threat=thr.with_eps(e), attack="pgd", attack_kwargs={"steps": 20}, seed=seed)
            curve.append((e, r.robust_accuracy))
        metrics = {"clean_accuracy": ev.clean_accuracy, "robust_accuracy": ev.robust_accuracy, "n": ev.n,
                   "robust_accuracy_vs_eps": curve, "train_seconds": res.seconds}
        x, y = next(iter(te.head(8).batches(8)))
        from .attacks import pgd

        adv = pgd(model, x, y, thr, steps=20, generator=torch.Generator().manual_seed(seed)).x_adv
        save_image_grid([x, adv, amplify(adv - x)], out / name / "attack_grid.png", labels=["clean", "adversarial", "perturbation"])
        atomic_write_json(out / name / "metrics.json", metrics)
        write_record(out / name, "demo", cfg.to_dict(), metrics)
        summary["models"][name] = metrics
    summary["seconds"] = time.time() - t0
    atomic_write_json(out / "summary.json", summary)
    report = write_report([runs["standard"], runs["robust"]], out / "report.html", title="robrep demo")
    rows = [f"{'model':<10} {'clean':>7} {'robust@' + format(DEMO_EPS, 'g'):>10}"]
    for n, m in summary["models"].items():
        rows.append(f"{n:<10} {m['clean_accuracy']:>7.3f} {m['robust_accuracy']:>10.3f}")
    return DemoResult(out, report, summary, "\n".join(rows))
