"""The main job: train a standard and a robust encoder on the bundled demo data, measure and
show both, and write one HTML report.

For each model the demo measures, on the bundled Fashion-MNIST subset:

* clean and robust accuracy (PGD) and robust accuracy vs eps (Madry et al. 2018);
* representation vulnerability and the downstream accuracy bound (Zhu, Zhang & Evans 2020),
  per layer;
* the SynBench score and curve (Ko et al., arXiv 2210.02989);
* linear-probe natural and adversarial accuracy on the penultimate representation;
* certified accuracy vs l2 radius of the Gaussian-smoothed classifier (Cohen et al. 2019);
* pictures (Engstrom et al. 2019): brittleness pairs, inversions, interpolations, feature
  visualizations and saliency maps, as PNG grids.

Every value goes into the run folder's ``metrics.json`` and ``record.json``; each figure is a PNG
there; :func:`robrep.report.html.write_report` gathers them into one self-contained page. The
sizes of every stage are one frozen :class:`DemoSizes` (``FULL``: <= 10 minutes on a 2-core
CPU; ``FAST``: for tests), recorded with the run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .data import ImageData, load_dataset
from .evaluate import evaluate
from .io.atomic import atomic_write_json
from .models import RobrepModel
from .progress import progress
from .report import amplify, save_image_grid
from .runs import write_record
from .threats import ThreatModel, threat
from .train import TrainConfig, train

__all__ = ["DemoResult", "DemoSizes", "FAST", "FULL", "run_demo", "DEMO_EPS", "summary_table"]

DEMO_EPS = 0.1  # linf radius on Fashion-MNIST pixels
#: one-thread worker processes per usable CPU when the demo picks its processes (see run_demo)
WORKERS_PER_CPU = 2


@dataclass(frozen=True)
class DemoSizes:
    """How much work each stage of the demo does (all sizes are recorded with the run)."""

    # training (both models: small-cnn, SGD; the robust one with PGD adversarial training)
    train_fraction: float  # class-balanced fraction of the 5000 training images
    epochs: int
    train_attack_steps: int  # PGD steps of adversarial training
    # accuracy and robust accuracy
    test_n: int  # first test images
    eval_steps: int  # PGD steps of the evaluation attack
    curve_eps: tuple[float, ...]  # robust accuracy vs eps (DEMO_EPS is always included)
    # representation vulnerability (robrep.info's standard preset: InfoNCE, separable MLP critics
    # trained together, worst-case critics fine-tuned from the clean ones; the last 30 % held out)
    mi_n: int  # first test images
    mi_layers: tuple[str, ...]  # layers; "penultimate" gives the headline numbers
    mi_critics: int  # critics per estimate, trained together (interval over them and held-out images)
    mi_steps: int  # maximum clean critic steps (early stopping; worst-case fine-tuning: a third of it)
    mi_batch: int
    mi_attack_steps: int  # batch PGD steps while training the worst-case critic
    mi_eval_attack_steps: int  # batch PGD steps on each held-out batch
    mi_eval_batches: int
    # SynBench (penultimate layer)
    synbench_scales: tuple[float, ...]  # mean scales ||mu|| (paper: 0.1 ... 4.9)
    synbench_n: int  # realizations per scale and split (paper: 2048)
    # linear probe (standard-trained linear head on the frozen penultimate layer)
    probe_train_n: int  # training images (first of the demo training split)
    probe_epochs: int
    probe_eval_n: int  # test images for natural / adversarial probe accuracy
    probe_eval_steps: int
    # randomized smoothing (Cohen et al. 2019)
    cert_n: int  # first test images
    cert_n0: int  # selection samples
    cert_samples: int  # estimation samples n (max certifiable radius sigma * Phi^-1(alpha^(1/n)))
    cert_sigma: float
    cert_alpha: float
    # pictures
    vis_steps: int  # inversion / interpolation optimizer steps (l2 step 0.1)
    feature_steps: int  # feature visualization steps
    brittle_steps: int  # representation-attack steps of the brittleness pair
    brittle_eps: float  # l2 radius of the brittleness pair
    interp_points: int
    smoothgrad_samples: int


FULL = DemoSizes(
    train_fraction=1.0, epochs=8, train_attack_steps=5,
    test_n=1000, eval_steps=20, curve_eps=(0.05, 0.1, 0.15, 0.2),
    mi_n=1000, mi_layers=("penultimate", "logits"), mi_critics=4, mi_steps=300, mi_batch=64,
    mi_attack_steps=3, mi_eval_attack_steps=10, mi_eval_batches=5,
    synbench_scales=tuple(round(0.2 * k - 0.1, 1) for k in range(1, 26)), synbench_n=1024,
    probe_train_n=5000, probe_epochs=20, probe_eval_n=1000, probe_eval_steps=20,
    cert_n=100, cert_n0=64, cert_samples=1000, cert_sigma=0.25, cert_alpha=0.001,
    vis_steps=300, feature_steps=150, brittle_steps=100, brittle_eps=3.0, interp_points=8, smoothgrad_samples=25,
)

FAST = DemoSizes(
    train_fraction=0.2, epochs=2, train_attack_steps=5,
    test_n=200, eval_steps=20, curve_eps=(0.05, 0.1, 0.15, 0.2),
    mi_n=384, mi_layers=("penultimate", "logits"), mi_critics=2, mi_steps=30, mi_batch=64,
    mi_attack_steps=2, mi_eval_attack_steps=5, mi_eval_batches=2,
    synbench_scales=tuple(round(0.5 * k, 1) for k in range(1, 10)), synbench_n=256,
    probe_train_n=1000, probe_epochs=5, probe_eval_n=200, probe_eval_steps=10,
    cert_n=30, cert_n0=32, cert_samples=100, cert_sigma=0.25, cert_alpha=0.001,
    vis_steps=50, feature_steps=30, brittle_steps=20, brittle_eps=3.0, interp_points=5, smoothgrad_samples=8,
)

#: radii of the certified-accuracy curve (l2, pixel units)
CERT_RADII: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(13))
#: the radius reported as a scalar (``certified_accuracy_r0.25``)
CERT_REPORT_RADIUS = 0.25
#: SynBench threshold accuracy and relative radius of the robust score
SYNBENCH_THRESHOLD, SYNBENCH_ROBUST_EPS = 0.7, 0.2
#: first-of-class test images shown in the picture grids (class indices of Fashion-MNIST)
PICTURE_CLASSES = (0, 1, 2, 3, 5, 7, 8, 9)
BRITTLE_PAIRS = ((0, 9), (1, 5), (7, 2), (8, 3))  # (source class, target class)
INTERP_PAIRS = ((0, 3), (7, 9))


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its runs and report, and what it measured.

    Attributes:
        out: the demo folder (``standard/``, ``robust/``, ``summary.json``, ``report.html``).
        report: the report path.
        summary: JSON summary (eps, sizes, per-model metrics, seconds).
        table: the short terminal table.
    """

    out: Path
    report: Path
    summary: dict[str, Any]
    table: str


def _first_of_class(data: ImageData, classes: tuple[int, ...]) -> torch.Tensor:
    """Index of the first image of each class in ``classes`` (deterministic picture inputs)."""
    _, y = data.tensors()  # type: ignore[attr-defined]
    hits = [torch.nonzero(y == c) for c in classes]
    return torch.stack([h[0, 0] if len(h) else torch.tensor(0) for h in hits])  # a missing class shows image 0


def _accuracy(model: RobrepModel, te: ImageData, thr: ThreatModel, s: DemoSizes, seed: int, precision: str = "fp32",
              attack: str = "pgd") -> dict[str, Any]:
    from .evaluate.probe import eval_attack_kwargs

    ak: dict[str, Any] = eval_attack_kwargs(attack, s.eval_steps)  # a protocol: its own budgets
    if precision != "fp32":  # an attack: bf16 passes, float32 verdicts; a protocol: the same per stage
        ak["precision"] = precision
    ev = evaluate(model, te, threat=thr, attack=attack, attack_kwargs=ak, seed=seed)
    curve = [[0.0, ev.clean_accuracy]]
    for e in sorted(set(s.curve_eps) | {thr.eps}):
        r = ev if e == thr.eps else evaluate(model, te, threat=thr.with_eps(e), attack=attack, attack_kwargs=ak, seed=seed)
        curve.append([float(e), r.robust_accuracy])
    out = {"clean_accuracy": ev.clean_accuracy, "robust_accuracy": ev.robust_accuracy, "n": ev.n,
           "robust_accuracy_vs_eps": curve, "attack": ev.attack}
    if ev.stages is not None:  # a protocol: the robust accuracy after each stage, and its flags
        out |= {f"robust_accuracy_after_{k}": v for k, v in ev.stages.items() if k != "clean"}
        out["flags"] = list(ev.flags)
    return out


def _vulnerability_settings(s: DemoSizes, seed: int) -> dict[str, Any]:
    return dict(preset="standard", n_critics=s.mi_critics, steps=s.mi_steps, adv_steps=max(10, s.mi_steps // 3),
                batch_size=s.mi_batch, attack_steps=s.mi_attack_steps, eval_attack_steps=s.mi_eval_attack_steps,
                n_eval_batches=s.mi_eval_batches, seed=seed)


def _vulnerability_layer(model: RobrepModel, te: ImageData, thr: ThreatModel, s: DemoSizes, seed: int,
                         layer: str) -> dict[str, Any]:
    """Vulnerability of one layer (seeded on its own: the same whichever layers ran before)."""
    from .info import vulnerability
    from .models import representation

    x = te.head(s.mi_n).tensors()[0]  # type: ignore[attr-defined]
    torch.manual_seed(seed)
    return vulnerability(representation(model, layer), x, thr, num_classes=te.info.num_classes, layer=layer,
                         **_vulnerability_settings(s, seed)).to_dict()


def _vulnerability_summary(per_layer: dict[str, Any], kw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    head = per_layer["penultimate"] if "penultimate" in per_layer else next(iter(per_layer.values()))
    m = {"mi_clean": head["mi_clean"]["estimate"], "mi_worst": head["mi_worst"]["estimate"],
         "vulnerability": head["vulnerability"]["estimate"], "vulnerability_low": head["vulnerability"]["low"],
         "vulnerability_high": head["vulnerability"]["high"], "accuracy_bound": head["accuracy_bound"]["estimate"]}
    if len(per_layer) > 1:
        m["vulnerability_per_layer"] = [[k, v["vulnerability"]["estimate"]] for k, v in per_layer.items()]
    return m, {"layers": per_layer, "settings": {k: v for k, v in kw.items() if k != "seed"}}


def _synbench(model: RobrepModel, s: DemoSizes, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    from .evaluate.synbench import DEFAULT_EPS, DEFAULT_THRESHOLDS, synbench

    r = synbench(model, layer="penultimate", eps=DEFAULT_EPS, thresholds=DEFAULT_THRESHOLDS, scales=s.synbench_scales,
                 n_train=s.synbench_n, n_test=s.synbench_n, seed=12 + seed)
    sc = r.scores()[f"{SYNBENCH_THRESHOLD:g}"]
    d = r.to_dict()
    m = {"synbench_score": sc["0"], "synbench_robust_score": sc[f"{SYNBENCH_ROBUST_EPS:g}"],
         "synbench_curve": d["synbench_curve"], "synbench_curve_raw": d["synbench_curve_raw"]}
    detail = {k: d[k] for k in ("scores", "best_eps", "eps", "thresholds", "scales", "accuracy", "bound", "feature_dim", "config")}
    return m, detail


def _probe(model: RobrepModel, tr: ImageData, te: ImageData, thr: ThreatModel, s: DemoSizes, seed: int,
           attack: str = "pgd") -> tuple[dict[str, Any], dict[str, Any]]:
    from .attacks import is_protocol
    from .evaluate import linear_probe

    r = linear_probe(model, tr.head(s.probe_train_n), te, layer="penultimate", head="linear", train_threat=None, eval_threat=thr,
                     epochs=s.probe_epochs, lr=1e-3, eval_steps=None if is_protocol(attack) else s.probe_eval_steps,
                     eval_n=s.probe_eval_n, seed=seed, attack=attack)
    return ({"probe_natural_accuracy": r.natural_accuracy, "probe_adversarial_accuracy": r.adversarial_accuracy},
            {"train_threat": r.train_threat, "eval": r.eval, "layer": "penultimate", "head": "linear",
             "train_n": min(s.probe_train_n, len(tr)), "epochs": s.probe_epochs})


def _certify(model: RobrepModel, te: ImageData, s: DemoSizes, seed: int, run_dir: Path, show: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    from .certify.runner import certify_dataset, write_tsv
    from .certify.smoothing import certified_accuracy, certified_accuracy_curve

    x, y = te.head(s.cert_n).tensors()  # type: ignore[attr-defined]
    dev = next(model.parameters()).device
    x, y = x.to(dev), y.to(dev)
    model.eval()
    rows: list[dict[str, Any]] = []
    for i in progress(range(len(y)), desc="certify", total=len(y), enable=show):  # image i: noise from (seed, i)
        rows += certify_dataset(model, x[i:i + 1], y[i:i + 1], s.cert_sigma, n0=s.cert_n0, n=s.cert_samples,
                                alpha=s.cert_alpha, batch_size=max(s.cert_n0, min(s.cert_samples, 1000)), seed=seed,
                                indices=[i])
    write_tsv(run_dir / "certify.tsv", rows)
    radii, correct = [r["radius"] for r in rows], [bool(r["correct"]) for r in rows]
    max_radius = s.cert_sigma * float(torch.special.ndtri(torch.tensor(s.cert_alpha ** (1.0 / s.cert_samples), dtype=torch.float64)))
    m = {"smoothed_accuracy": certified_accuracy(radii, correct, 0.0),
         f"certified_accuracy_r{CERT_REPORT_RADIUS:g}": certified_accuracy(radii, correct, CERT_REPORT_RADIUS),
         "abstain_rate": sum(r["predict"] < 0 for r in rows) / len(rows),
         "certified_accuracy_vs_radius": certified_accuracy_curve(radii, correct, CERT_RADII)}
    return m, {"sigma": s.cert_sigma, "n": len(rows), "n0": s.cert_n0, "samples": s.cert_samples, "alpha": s.cert_alpha,
               "max_certifiable_radius": max_radius, "noise_trained": False, "tsv": "certify.tsv"}


def _pictures(model: RobrepModel, te: ImageData, thr: ThreatModel, s: DemoSizes, seed: int, run_dir: Path) -> dict[str, Any]:
    from .attacks import pgd
    from .visualize import brittleness, interpolate, invert, saliency, ssim, visualize_features

    dev = next(model.parameters()).device
    model.eval()
    xs, ys = te.tensors()  # type: ignore[attr-defined]
    idx = _first_of_class(te, PICTURE_CLASSES)
    x, y = xs[idx].to(dev), ys[idx].to(dev)

    def gen(k: int) -> torch.Generator:  # one seeded stream per picture
        return torch.Generator(device=dev).manual_seed(seed * 1000 + k)

    # attack grid (clean, adversarial, perturbation)
    adv = pgd(model, x, y, thr, steps=s.eval_steps, generator=gen(0)).x_adv
    save_image_grid([x, adv, amplify(adv - x)], run_dir / "attack_grid.png", labels=["clean", "adversarial", "perturbation"])

    def pick(classes: tuple[int, ...]) -> torch.Tensor:
        return xs[_first_of_class(te, classes)].to(dev)

    # brittleness: move the source (l2 <= eps) to match the target's representation
    src, tgt = pick(tuple(a for a, _ in BRITTLE_PAIRS)), pick(tuple(b for _, b in BRITTLE_PAIRS))
    b = brittleness(model, src, tgt, eps=s.brittle_eps, steps=s.brittle_steps, generator=gen(1))
    save_image_grid([b.x_source, b.x_target, b.x_adv, amplify(b.x_adv - b.x_source)], run_dir / "brittleness.png",
                    labels=["source", "target", "source matched", "change"])

    # inversion of the representation from noise
    inv = invert(model, x, steps=s.vis_steps, step_size=0.1, generator=gen(2))
    save_image_grid([x, inv.x], run_dir / "inversion.png", labels=["image", "inverted"])

    # interpolation of representations, inverted from the pixel interpolation
    x1, x2 = pick(tuple(a for a, _ in INTERP_PAIRS)), pick(tuple(c for _, c in INTERP_PAIRS))
    ip = interpolate(model, x1, x2, n=s.interp_points, steps=s.vis_steps, step_size=0.1)
    rows, labels = [], []
    for k in range(len(x1)):
        rows += [ip.pixel[k], ip.x[k]]
        labels += [f"pixels {k + 1}", f"repr. {k + 1}"]
    save_image_grid(rows, run_dir / "interpolation.png", labels=labels)

    # feature visualization: the 8 most active penultimate components, from 2 noise starts
    from .models import representation

    with torch.no_grad():
        act = representation(model, "penultimate")(xs.to(dev)).mean(0)
    comps = [int(c) for c in torch.argsort(act, descending=True)[:8]]
    fv = visualize_features(model, comps, "noise", n=2, steps=s.feature_steps, step_size=0.1, fake_relu=True, generator=gen(3))
    save_image_grid([fv.x[:, j] for j in range(fv.x.shape[1])], run_dir / "features.png", labels=["start 1", "start 2"])

    # saliency: input gradient and SmoothGrad of the predicted class
    g1 = saliency(model, x, method="gradient")
    g2 = saliency(model, x, method="smoothgrad", samples=s.smoothgrad_samples, generator=gen(4))
    save_image_grid([x, g1.image, g2.image], run_dir / "saliency.png", labels=["image", "gradient", "SmoothGrad"])

    return {"brittleness_rep_error": float(b.rep_error_after.mean()), "brittleness_rep_error_before": float(b.rep_error_before.mean()),
            "inversion_rep_error": float(inv.rep_error.mean()), "inversion_ssim": float(ssim(inv.x.detach(), x).mean()),
            "feature_components": comps}


@dataclass(frozen=True)
class _Job:
    """What every task of one demo run shares (sent to worker processes, so plain data only)."""

    sizes: DemoSizes
    fast: bool
    device: str
    seed: int
    precision: str
    attack: str
    threads: int | None  # worker processes: their torch threads; None: a task run in this process
    show_progress: bool
    verbose: bool  # stage messages on stderr (worker processes)


#: the measurements of one trained model in the order of its metrics.json (each a task; the
#: vulnerability one task per layer)
MEASURES = ("accuracy and robust accuracy", "representation vulnerability", "SynBench", "linear probe",
            "randomized smoothing", "pictures")
#: the order in which a pool starts a model's measurement tasks: longest first
_LONGEST_FIRST = ("representation vulnerability", "randomized smoothing", "accuracy and robust accuracy", "linear probe",
                  "pictures", "SynBench")


def _device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _train_config(objective: str, job: _Job) -> TrainConfig:
    from .runtime import resolve_precision

    bf16 = resolve_precision(job.precision, _device(job.device)) == "bf16"
    s = job.sizes
    return TrainConfig(model="small-cnn", dataset="demo", objective=objective, eps=DEMO_EPS if objective != "standard" else 0.0,
                       epochs=s.epochs, batch_size=64, lr=0.05, seed=job.seed, device=job.device, eval_n=0, amp=bf16,
                       channels_last=bf16, objective_kwargs={"steps": s.train_attack_steps} if objective == "pgd" else {})


def _task(job: _Job, name: str, objective: str, run_dir: Path, stage: str, part: str = "") -> dict[str, Any]:
    """One task of the demo: ``stage="training"`` trains the model into ``run_dir``; any other stage
    of :data:`MEASURES` measures the trained model read back from ``run_dir/model.safetensors``.

    Every task starts from the same seeded state and reads its inputs from disk, so its numbers do
    not depend on which process runs it or what ran before it there. Returns ``metrics``, ``details``,
    ``seconds``, ``cpu_seconds`` (and ``train_seconds`` and ``config`` for training)."""
    import sys

    from .models import load
    from .runtime import configure_threads, set_precision

    if job.threads is not None:  # a worker process: its own threads and precision
        configure_threads(job.threads)
        set_precision(job.precision)
    if job.verbose:
        print(f"[demo] {name}: {stage}{f' ({part})' if part else ''} ...", file=sys.stderr, flush=True)
    t, c = time.perf_counter(), time.process_time()
    s, seed, thr = job.sizes, job.seed, threat("linf", DEMO_EPS)
    tr, te = _demo_data(s, seed)
    torch.manual_seed(seed)
    out: dict[str, Any] = {"metrics": {}, "details": None}
    if stage == "training":
        cfg = _train_config(objective, job)
        res = train(cfg, run_dir, train_data=tr, test_data=te, show_progress=job.show_progress)
        out |= {"train_seconds": res.seconds, "config": cfg.to_dict()}
    else:
        model = load(run_dir / "model.safetensors", device=_device(job.device)).eval()
        if stage == "accuracy and robust accuracy":
            out["metrics"] = _accuracy(model, te, thr, s, seed, job.precision, job.attack)
        elif stage == "representation vulnerability":
            out["details"] = _vulnerability_layer(model, te, thr, s, seed, part)
        elif stage == "SynBench":
            out["metrics"], out["details"] = _synbench(model, s, seed)
        elif stage == "linear probe":
            out["metrics"], out["details"] = _probe(model, tr, te, thr, s, seed, job.attack)
        elif stage == "randomized smoothing":
            out["metrics"], out["details"] = _certify(model, te, s, seed, run_dir, job.show_progress)
        elif stage == "pictures":
            out["metrics"] = _pictures(model, te, thr, s, seed, run_dir)
        else:  # pragma: no cover - the stages are fixed above
            raise ValueError(f"unknown demo stage {stage!r}")
    out["seconds"], out["cpu_seconds"] = round(time.perf_counter() - t, 2), round(time.process_time() - c, 2)
    return out


def _tasks(s: DemoSizes) -> list[tuple[str, str]]:
    """The (stage, part) measurement tasks of one model, longest first."""
    parts = {"representation vulnerability": list(s.mi_layers)}
    return [(st, part) for st in _LONGEST_FIRST for part in parts.get(st, [""])]


def _write_model(name: str, objective: str, run_dir: Path, job: _Job, done: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    """Gather one model's task results into its ``metrics.json`` and ``record.json``."""
    s = job.sizes
    trained = done[("training", "")]
    metrics: dict[str, Any] = {}
    details: dict[str, Any] = {}
    seconds = {f"training ({objective}, {s.epochs} epochs)": trained["seconds"]}
    cpu = {f"training ({objective}, {s.epochs} epochs)": trained["cpu_seconds"]}
    for stage in MEASURES:
        parts = [r for (st, _), r in done.items() if st == stage]
        seconds[stage] = round(sum(r["seconds"] for r in parts), 2)
        cpu[stage] = round(sum(r["cpu_seconds"] for r in parts), 2)
        if stage == "representation vulnerability":
            m, details["vulnerability"] = _vulnerability_summary({layer: done[(stage, layer)]["details"] for layer in s.mi_layers},
                                                                 _vulnerability_settings(s, job.seed))
        else:
            m = dict(done[(stage, "")]["metrics"])
            key = {"SynBench": "synbench", "linear probe": "probe", "randomized smoothing": "certification"}.get(stage)
            if key is not None:
                details[key] = done[(stage, "")]["details"]
        if stage == "pictures":
            details["pictures"] = {"feature_components": m.pop("feature_components"), "brittle_eps": s.brittle_eps,
                                   "brittle_pairs": BRITTLE_PAIRS, "interp_pairs": INTERP_PAIRS}
        metrics.update(m)
        if stage == "accuracy and robust accuracy":
            metrics["train_seconds"] = trained["train_seconds"]
    metrics["stage_seconds"] = seconds
    metrics["stage_cpu_seconds"] = cpu  # process CPU time: near the idle time on a loaded machine with 1 thread
    metrics["details"] = details
    atomic_write_json(run_dir / "metrics.json", metrics)
    write_record(run_dir, "demo", trained["config"], metrics, demo={"eps": DEMO_EPS, "norm": "linf", "fast": job.fast,
                                                                    "sizes": asdict(s), "attack": metrics["attack"]})
    return metrics


def _demo_data(s: DemoSizes, seed: int) -> tuple[ImageData, ImageData]:
    tr, te = load_dataset("demo", "train"), load_dataset("demo", "test")
    return tr.fraction(s.train_fraction, seed=seed), te.head(s.test_n)


def _run_in_pool(models: tuple[tuple[str, str], ...], runs: dict[str, Path], job: _Job, workers: int) -> dict[str, dict]:
    """Every task of every model on a pool of ``workers`` spawned processes: the trainings first
    (the adversarial one, the longest, first), each model's measurements as soon as it is trained,
    longest first. Returns the task results per model."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    done: dict[str, dict[tuple[str, str], dict[str, Any]]] = {name: {} for name, _ in models}
    objective = dict(models)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = {pool.submit(_task, job, name, objective[name], runs[name], "training"): (name, "training", "")
                   for name, _ in sorted(models, key=lambda m: m[1] == "standard")}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    name, stage, part = pending.pop(fut)
                    done[name][(stage, part)] = fut.result()
                    if stage == "training":
                        for st, pt in _tasks(job.sizes):
                            pending[pool.submit(_task, job, name, objective[name], runs[name], st, pt)] = (name, st, pt)
        except BaseException:  # a failed task (or Ctrl-C): drop the queued tasks instead of running them first
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return done


def _quiet(msg: str) -> None:
    """The default ``log``: says nothing."""


def run_demo(out: str | Path = "robrep-demo", *, fast: bool = False, device: str = "auto", seed: int = 0,
             show_progress: bool = True, log: Callable[[str], None] | None = None, sizes: DemoSizes | None = None,
             precision: str = "fp32", threads: int | None = None, attack: str = "pgd", jobs: int | None = 1) -> DemoResult:
    """Run the demo into ``out`` and return where its report is.

    Args:
        out: demo folder; ``out/standard`` and ``out/robust`` are run folders.
        fast: use :data:`FAST` sizes (tests) instead of :data:`FULL` (<= 10 minutes on 2 CPU cores).
        device: ``auto``, ``cpu``, ``cuda``...
        seed: seeds training, attacks, critics, noise and pictures.
        show_progress: progress bars on stderr.
        log: one-line stage messages (e.g. to stderr).
        sizes: override the preset sizes.
        precision: ``fp32`` (exact), ``auto`` or ``bf16``: bf16 autocast (channels-last) for training
            and the robust-accuracy attack, with float32 verdicts (``robrep demo`` uses ``auto``).
        attack: the attack of the robust-accuracy table (robust accuracy, its eps curve and the probe's
            adversarial accuracy): ``pgd`` (PGD with ``eval_steps``), any name of ``robrep list attacks``,
            or a protocol such as ``autoattack-standard`` or ``fast`` (its own budgets; the robust
            accuracy after each stage and the flags go into the metrics).
        threads: torch threads (None: keep the process's choice, or pick from the free CPUs:
            :func:`robrep.runtime.configure_threads`); the choice is logged.
        jobs: worker processes for the demo's tasks (each model's training, then each of its
            measurements; 1: one after the other in this process; None: :data:`WORKERS_PER_CPU`
            one-thread processes per usable CPU where two or more are usable and ``threads`` is
            None, as ``robrep demo`` does). Every task is seeded on its own and reads the trained
            model from disk, so the numbers do not depend on it (with one thread per process).
    """
    from .attacks import ATTACKS, get_protocol, is_protocol
    from .report.html import write_report
    from .runtime import configure_threads, plan_processes

    ATTACKS.get(attack)  # unknown names list the attacks before any training
    log = log or _quiet
    configure_threads(threads, log=log)
    s = sizes or (FAST if fast else FULL)
    out = Path(out)
    t0 = time.time()
    runs: dict[str, Path] = {}
    summary: dict[str, Any] = {"eps": DEMO_EPS, "norm": "linf", "fast": fast, "sizes": asdict(s), "precision": precision,
                               "threads": torch.get_num_threads(), "models": {},
                               "attack": {"name": attack, **({"protocol_version": get_protocol(attack).version} if is_protocol(attack) else {})}}
    models = (("standard", "standard"), ("robust", "pgd"))
    n_tasks = len(models) * (1 + len(_tasks(s)))
    jobs, per_job = plan_processes(jobs, n_tasks, threads=threads, device=device, per_cpu=WORKERS_PER_CPU)
    summary["jobs"] = {"processes": jobs, "threads_per_process": per_job if jobs > 1 else torch.get_num_threads()}
    for name, _ in models:
        runs[name] = out / name
    if jobs > 1:
        log(f"robrep demo: {n_tasks} tasks (training, then each measurement of each model) on {jobs} worker processes, "
            f"{per_job} thread{'s' if per_job > 1 else ''} each (--jobs 1 runs them one after the other in this process)")
        job = _Job(s, fast, device, seed, precision, attack, per_job, False, log is not _quiet)
        done = _run_in_pool(models, runs, job, jobs)
    else:
        job = _Job(s, fast, device, seed, precision, attack, None, show_progress, False)
        done = {}
        for name, objective in models:
            done[name] = {}
            for stage, part in [("training", ""), *_tasks(s)]:
                log(f"[demo] {name}: {stage}{f' ({part})' if part else ''} ...")
                done[name][(stage, part)] = _task(job, name, objective, runs[name], stage, part)
    for name, objective in models:
        summary["models"][name] = _write_model(name, objective, runs[name], job, done[name])
    summary["seconds"] = time.time() - t0
    atomic_write_json(out / "summary.json", summary)
    report = write_report([runs["standard"], runs["robust"]], out / "report.html", title="robrep demo", notes=_notes(s, fast, attack))
    return DemoResult(out, report, summary, summary_table(summary))


def _notes(s: DemoSizes, fast: bool, attack: str = "pgd") -> list[str]:
    from .attacks import get_protocol, is_protocol

    how = (f"PGD-{s.eval_steps}" if attack == "pgd" else f"the {attack} protocol (version {get_protocol(attack).version})"
           if is_protocol(attack) else attack)
    r_max = s.cert_sigma * float(torch.special.ndtri(torch.tensor(s.cert_alpha ** (1.0 / s.cert_samples), dtype=torch.float64)))
    notes = [
        f"Two small CNNs on the bundled Fashion-MNIST subset: standard (plain training) and robust "
        f"(PGD adversarial training, l∞ eps = {DEMO_EPS:g}). Robust accuracy: {how} at l∞ eps = {DEMO_EPS:g} "
        f"on the first {s.test_n} test images (the probe's adversarial accuracy too).",
        f"Representation vulnerability (Zhu et al. 2020): clean minus worst-case mutual information (nats, InfoNCE, at most "
        f"log {s.mi_batch} = {math.log(s.mi_batch):.2f}) of the penultimate layer at the same eps, from {s.mi_critics} separable "
        f"MLP critics with bounded scores trained together (the paper uses a convolutional critic and the DV bound) for at "
        f"most {s.mi_steps} steps on {s.mi_n} test images; the interval (vulnerability_low .. high) covers the critics' "
        f"spread and the held-out images. "
        f"accuracy_bound is Fano's bound on "
        f"the adversarial accuracy of any classifier on the representation; 1 means it does not constrain.",
        f"SynBench (Ko et al.): score at threshold accuracy {SYNBENCH_THRESHOLD:g} for eps 0 and {SYNBENCH_ROBUST_EPS:g} "
        f"(relative l2 radius), {len(s.synbench_scales)} scales × {s.synbench_n} realizations per split.",
        f"Certified accuracy: randomized smoothing (Cohen et al. 2019) with sigma = {s.cert_sigma:g}, n0 = {s.cert_n0}, "
        f"n = {s.cert_samples}, alpha = {s.cert_alpha:g} on the first {s.cert_n} test images (no radius above "
        f"{r_max:.3f} can be certified with this n). Neither model was trained with Gaussian noise, so both smoothed "
        f"classifiers are weak; this measures the models as they are, not what smoothing achieves with noise training.",
    ]
    if fast:
        notes.append("--fast run: tiny budgets to check the pipeline; do not draw conclusions from these numbers.")
    return notes


def summary_table(summary: dict[str, Any]) -> str:
    """The short terminal table of a demo summary (one line per model)."""
    cols = [("clean", "clean_accuracy"), (f"robust@{summary['eps']:g}", "robust_accuracy"), ("RV(nats)", "vulnerability"),
            ("acc.bound", "accuracy_bound"), ("SynBench", "synbench_score"), ("probe", "probe_natural_accuracy"),
            ("probe-adv", "probe_adversarial_accuracy"), (f"cert@{CERT_REPORT_RADIUS:g}", f"certified_accuracy_r{CERT_REPORT_RADIUS:g}")]
    w = [max(len(h), 6) for h, _ in cols]
    rows = [f"{'model':<9}" + "".join(f" {h:>{n}}" for (h, _), n in zip(cols, w))]
    for name, m in summary["models"].items():
        vals = []
        for (_, k), n in zip(cols, w):
            v = m.get(k)
            vals.append(f" {v:>{n}.3f}" if isinstance(v, (int, float)) and math.isfinite(v) else f" {'-':>{n}}")
        rows.append(f"{name:<9}" + "".join(vals))
    return "\n".join(rows)
