"""``profile``: measure one encoder's representation on the user's data and on synthetic data,
and write its robustness card (``card.json`` + ``card.html`` + PNG pictures).

Stages (each timed and recorded): cached features (one forward per image and layer, under
``inference_mode``, batch size within a memory cap); the linear probe (trained to convergence on
the cached features) with its natural accuracy and its adversarial accuracy under an attack
through the frozen encoder in pixel space; the embedding-sensitivity distribution; the
representation vulnerability and Fano bound of each chosen layer; SynBench; randomized smoothing
of the probe; pictures (inversion, saliency). Every measure calls the same library function as
its own command (``robrep synbench``, ``robrep vulnerability``, ...) with the budget's sizes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import ImageData
from ..errors import InputError
from ..io.atomic import atomic_write_json
from ..io.chunks import module_digest
from ..io.shard import Shard
from ..models import RobrepModel, list_layers, representation
from ..models.memory import ChunkedGrad
from ..threats import ThreatModel
from ..threats import threat as make_threat
from .budgets import Budget, get_budget, vulnerability_kwargs, vulnerability_min_images
from .card import SCHEMA_VERSION, Card, wilson_interval
from .cells import run_cells
from .data import materialize, pick, profile_data
from .features import DEFAULT_MEMORY_CAP, FeatureCache
from .sensitivity import embedding_sensitivity

__all__ = ["ProfileResult", "profile", "resolve_source", "check_layers", "profile_data", "vulnerability_kwargs",
           "vulnerability_min_images",
           "CERT_RADIUS", "SYNBENCH_THRESHOLD", "SYNBENCH_ROBUST_EPS", "DEFAULT_EPS"]

#: default threat: l-inf, 8/255
DEFAULT_EPS = 8 / 255
#: l2 radius of the headline certified accuracy
CERT_RADIUS = 0.25
CERT_RADII: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(21))
SYNBENCH_THRESHOLD, SYNBENCH_ROBUST_EPS = 0.7, 0.2
RANDOM_INIT = "random initialization (no pretrained weights): a reference point, not a trained encoder"


@dataclass(frozen=True)
class ProfileResult:
    """Where the card was written and the card itself."""

    card: Card
    out: Path
    card_json: Path
    card_html: Path


def _device_of(name: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_source(source: str | RobrepModel, *, num_classes: int, dataset_shape: Sequence[int], arch: str | None = None,
                   trust: bool = False, input_shape: Sequence[int] | None = None,
                   device: torch.device | str = "cpu") -> tuple[RobrepModel, dict[str, Any]]:
    """The encoder named by ``source`` and what the card says about it.

    * a :class:`RobrepModel` object: used as given;
    * ``init:<arch>``: a registry architecture (``small-cnn``, ``tv:resnet18``, ``timm:vit_small_patch16_224``...)
      with random weights (the card says so); tv/timm nets take 3x224x224 input unless
      ``input_shape`` is given, robrep nets the data set's shape;
    * a file: a robrep checkpoint or another tool's (``arch`` / ``trust`` as for ``robrep eval``);
    * anything else goes to :func:`robrep.models.load`, the public model-source syntax.
    """
    from ..models import create_model, load_with_meta

    if isinstance(source, RobrepModel):
        return source.to(device), {"weights": "as given (Python object)"}
    if source.startswith("init:"):
        a = source[len("init:"):]
        foreign = a.startswith(("tv:", "timm:"))
        shape = tuple(input_shape) if input_shape else ((3, 224, 224) if foreign else tuple(dataset_shape))
        kw: dict[str, Any] = {}
        if a.startswith("timm:") and any(k in a for k in ("vit", "deit")) and shape[1:] != (224, 224):
            kw["img_size"] = shape[1]
        torch.manual_seed(0)
        model = create_model(a, num_classes=num_classes, input_shape=shape, **kw)
        return model.to(device), {"weights": RANDOM_INIT, "random_init": True}
    p = Path(source)
    if p.exists():
        model, meta = load_with_meta(p, arch=arch, trust=trust, device=torch.device(device))
        return model, {"weights": str(p), "checkpoint_meta": {k: v for k, v in meta.items() if k in ("dataset", "epoch", "objective", "threat")}}
    model, meta = load_with_meta(source, device=torch.device(device))  # tv:/timm:/hf:/open_clip: sources
    info: dict[str, Any] = {"weights": meta.get("weights") or source}
    if meta.get("pretrained") is False:  # a source without weights is randomly initialized: the card says so
        info |= {"weights": RANDOM_INIT, "random_init": True}
    return model, info


def check_layers(model: RobrepModel, layers: Sequence[str]) -> None:
    """Unknown layer names raise :class:`InputError` listing the names that exist."""
    names = list_layers(model)
    bad = [name for name in layers if name not in ("penultimate", "logits") and name not in names]
    if bad:
        shown = ", ".join(names[:40]) + (f", ... ({len(names)} in all)" if len(names) > 40 else "")
        raise InputError(f"layer {bad[0]!r} does not exist in this model; use penultimate, logits or one of: {shown} "
                         f"(all with their shapes: robrep list-layers SOURCE)")


class _Stages:
    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.log(f"[profile] {name} ...")
        t = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t, 3)


def _hl(value: float | None, *, low: float | None = None, high: float | None = None, n: int | None = None, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"value": value}
    if low is not None:
        d["low"], d["high"] = low, high
    if n is not None:
        d["n"] = n
    d.update(extra)
    return d


def _acc(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(k, n)
    return _hl(k / n if n else float("nan"), low=lo, high=hi, n=n)


def profile(
    source: str | RobrepModel,
    dataset: str,
    *,
    out: str | Path,
    budget: str | Budget = "quick",
    layers: Sequence[str] = ("penultimate",),
    threat: ThreatModel | None = None,
    seed: int = 0,
    device: str = "auto",
    name: str | None = None,
    arch: str | None = None,
    trust: bool = False,
    input_shape: Sequence[int] | None = None,
    memory_cap: int = DEFAULT_MEMORY_CAP,
    data_root: str | None = None,
    download: bool = False,
    overwrite: bool = False,
    pictures: bool = True,
    weights: str | None = None,
    random_init: bool | None = None,
    precision: str = "fp32",
    data: tuple[ImageData, ImageData] | None = None,
    resume: bool = False,
    shard: Shard | None = None,
    log: Callable[[str], None] | None = None,
) -> ProfileResult:
    """Profile an encoder and write its robustness card into ``out``.

    Args:
        source: the encoder (see :func:`resolve_source`).
        dataset: data set name (``robrep list datasets``).
        out: card folder (``card.json``, ``card.html``, PNGs). An existing card is kept unless
            ``overwrite``.
        budget: ``quick``, ``standard``, ``paper`` or a :class:`Budget`.
        layers: representation layers; the first is the probe's, SynBench's and the
            sensitivity's, vulnerability is measured for each.
        threat: the threat model (default l-inf 8/255).
        seed: seeds every random choice.
        name: display name on the card (default: the source).
        input_shape: input shape of an ``init:`` model.
        memory_cap: bytes one forward batch may use (automatic batch size).
        pictures: also compute the inversion and saliency pictures.
        weights: where the weights come from, for the card (default: found from the source).
        random_init: say on the card that the weights are random (default: found from the source;
            ``init:`` sources are random).
        precision: ``fp32``, ``bf16`` or ``auto`` (bf16 where the device has native bf16): the
            forward-only work (cached features, SynBench features) runs on a bf16 copy of the
            encoder; the probe's fit, its attack, the sensitivity, the vulnerability and the
            certificates stay float32. Recorded in the card.
        data: (train, test) :class:`ImageData` to profile instead of loading ``dataset`` (which
            then only names them on the card).
        resume: keep the measures already finished in ``out/chunks`` (written by a run split
            across ``torchrun`` ranks) instead of refusing them.
        shard: this process's place in a ``torchrun`` job: every rank computes the features
            and the probe, the measures after it (sensitivity, vulnerability, SynBench,
            smoothing, pictures) are dealt to the ranks as cells saved in ``out/chunks``, and
            rank 0 writes the card, the same as a single-process run's.

    The data stream: the features come from batches of the chosen images (decoded as each
    batch is served), and each measure materializes only the images it works on.
    """
    from ..runs import environment

    log = log or (lambda s: None)
    b = get_budget(budget) if isinstance(budget, str) else budget
    thr = threat if threat is not None else make_threat("linf", DEFAULT_EPS)
    layers = list(layers) or ["penultimate"]
    out = Path(out)
    shard = shard or Shard()
    if (out / "card.json").exists() and not overwrite:
        raise InputError(f"{out / 'card.json'} exists; pass --overwrite to replace it or choose another --out")
    from ..data import dataset_info
    from ..runtime import resolve_precision

    if data is None:
        try:
            dataset_info(dataset)
        except InputError:  # a data set on disk (imagefolder:, wds:, ...): its shape is known once it is opened
            from ..data import load_dataset

            data = (load_dataset(dataset, "train", root=data_root, download=download),
                    load_dataset(dataset, "test", root=data_root, download=download))
    info = data[1].info if data is not None else dataset_info(dataset)
    dev = _device_of(device)
    feat_precision = resolve_precision(precision, dev)
    model, model_note = resolve_source(source, num_classes=info.num_classes, dataset_shape=info.input_shape, arch=arch,
                                       trust=trust, input_shape=input_shape, device=dev)
    model.eval()
    if weights is not None:
        model_note["weights"] = weights
    if random_init is not None:
        model_note["random_init"] = bool(random_init)
        if random_init and weights is None:
            model_note["weights"] = RANDOM_INIT
    check_layers(model, layers)
    tr, te, adapted = profile_data(dataset, b, input_shape=model.input_shape, root=data_root, download=download, seed=seed,
                                   data=data, log=log)
    num_classes = te.info.num_classes
    n_mi, need_mi = min(b.mi_n, len(te)), vulnerability_min_images(b)
    if n_mi < need_mi:
        raise InputError(f"the vulnerability needs at least {need_mi} test images (3-fold cross-fitting: 3 held-out batches "
                         f"of mi_batch = {b.mi_batch}, each fold also needs a validation and a training batch), the profile "
                         f"has {n_mi}; give more test images (--set test_n=... mi_n=...) or lower mi_batch (--set mi_batch=...)")
    stage = _Stages(log)
    cache = FeatureCache(memory_cap=memory_cap)
    layer0 = layers[0]
    torch.manual_seed(seed)
    results: dict[str, Any] = {}
    headline: dict[str, dict[str, Any]] = {}
    curves: dict[str, Any] = {}
    abs_ = cache.attack_batch_size(model, layer0)

    # 1. features (cached, streamed) and the linear probe
    with stage("features"):
        ftr, ytr = cache.data_features(model, layer0, tr, precision=feat_precision)
        fte, yte = cache.data_features(model, layer0, te, precision=feat_precision)
    with stage("linear probe"):
        from ..attacks import is_protocol
        from ..evaluate import linear_probe

        ev_data, _ = pick(te, b.probe_eval_n, seed)
        pr = linear_probe(model, tr, ev_data, layer=layer0, head="linear", eval_threat=thr, attack=b.probe_attack,
                          eval_steps=b.probe_eval_steps, seed=seed, features=(ftr, ytr), eval_batch_size=abs_)
        clf = pr.classifier.eval()
        with torch.no_grad():
            pred = clf.head(fte.to(dev)).argmax(1).cpu()
        k_nat = int((pred == yte).sum())
        n_ev = pr.eval["n"]
        k_adv = round((pr.adversarial_accuracy or 0.0) * n_ev)
        results["probe"] = {"layer": layer0, "head": "linear", "fit": pr.fit, "natural_accuracy": k_nat / len(yte),
                            "attack": b.probe_attack, "attack_steps": None if is_protocol(b.probe_attack) else b.probe_eval_steps,
                            "natural_n": len(yte), "eval_subset_natural_accuracy": pr.natural_accuracy,
                            "adversarial_accuracy": pr.adversarial_accuracy, "adversarial_n": n_ev, "eval": pr.eval}
        headline["probe_natural_accuracy"] = _acc(k_nat, len(yte))
        headline["probe_adversarial_accuracy"] = _acc(k_adv, n_ev)
    after_probe = torch.get_rng_state()

    # 2. embedding sensitivity
    def sensitivity_cell(results: dict[str, Any], headline: dict[str, Any], curves: dict[str, Any]) -> None:
        s_data, s_idx = pick(te, b.sensitivity_n, seed)
        ns = len(s_data)
        sens = _sensitivity(model, s_data, thr, layer0, b.sensitivity_steps, seed, abs_,
                            fte[s_idx] if feat_precision == "fp32" else None)
        sd = sens.to_dict()
        results["sensitivity"] = sd
        s = sd["summary"]
        headline["sensitivity_median"] = _hl(s["median"], n=ns, p10=s["p10"], p90=s["p90"])
        headline["sensitivity_mean"] = _hl(s["mean"], low=s["mean_low"], high=s["mean_high"], n=ns)
        headline["sensitivity_random_median"] = _hl(s["random_median"], n=ns)
        qs = [(i + 0.5) / ns for i in range(ns)]
        curves["sensitivity"] = {
            "title": "Embedding sensitivity (CDF)", "x": "||R(x+d) - R(x)|| / ||R(x)||", "y": "fraction of images",
            "n": f"n = {ns} images; {thr.to_dict()['norm']} eps = {thr.eps:g}; attack: {b.sensitivity_steps} PGD steps",
            "series": {"representation attack": [[v, q] for v, q in zip(sorted(sens.ratios), qs)],
                       "random d in the ball": [[v, q] for v, q in zip(sorted(sens.random_ratios), qs)]},
            "reference": ["random d in the ball"]}
    # 3. representation vulnerability per layer
    def vulnerability_cell(results: dict[str, Any], headline: dict[str, Any], curves: dict[str, Any]) -> None:
        from ..info import vulnerability
        from ..info.estimate import estimate_mi

        x_mi, _ = pick(te, b.mi_n, seed, mixed=True)  # the images the critics read and the attack moves (classes mixed)
        kw = vulnerability_kwargs(b, seed)
        per_layer: dict[str, Any] = {}
        torch.manual_seed(seed)
        for layer in layers:
            # the critics' attacks back-propagate through the encoder on whole batches: chunked so
            # that one forward+backward holds one attack batch's activations (within memory_cap)
            rep = ChunkedGrad(representation(model, layer), cache.attack_batch_size(model, layer))
            clean = estimate_mi(rep, x_mi, threat=None, **kw)
            per_layer[layer] = vulnerability(rep, x_mi, thr, num_classes=num_classes, layer=layer, mi_clean=clean, **kw).to_dict()
        results["vulnerability"] = {"layers": per_layer, "n": len(x_mi),
                                    "settings": {k: v for k, v in kw.items() if k != "seed"}}
        v0 = per_layer[layer0]
        crit = f"{b.mi_critics} critics"
        headline["vulnerability"] = _hl(v0["vulnerability"]["estimate"], low=v0["vulnerability"]["low"],
                                        high=v0["vulnerability"]["high"], n=len(x_mi), critics=b.mi_critics)
        headline["mi_clean"] = _hl(v0["mi_clean"]["estimate"], low=v0["mi_clean"]["low"], high=v0["mi_clean"]["high"], n=len(x_mi))
        headline["mi_worst"] = _hl(v0["mi_worst"]["estimate"], low=v0["mi_worst"]["low"], high=v0["mi_worst"]["high"], n=len(x_mi))
        headline["accuracy_bound"] = _hl(v0["accuracy_bound"]["estimate"], low=v0["accuracy_bound"]["low"],
                                         high=v0["accuracy_bound"]["high"], n=len(x_mi))
        curves["vulnerability"] = {
            "title": "Representation vulnerability per layer", "x": "layer", "y": "vulnerability (nats)",
            "n": f"n = {len(x_mi)} images ({crit}, InfoNCE bound); bars: 95 % intervals",
            "series": {"vulnerability": [[k, v["vulnerability"]["estimate"]] for k, v in per_layer.items()]},
            "errors": {"vulnerability": [[v["vulnerability"]["low"], v["vulnerability"]["high"]] for v in per_layer.values()]}}
    # 4. SynBench
    def synbench_cell(results: dict[str, Any], headline: dict[str, Any], curves: dict[str, Any]) -> None:
        from ..evaluate.synbench import DEFAULT_EPS as SB_EPS
        from ..evaluate.synbench import DEFAULT_THRESHOLDS, synbench

        encoder: Any = model
        sb_kw: dict[str, Any] = {"layer": layer0}
        if feat_precision == "bf16":
            from ..attacks.precision import Bf16Model

            encoder, sb_kw = Bf16Model(representation(model, layer0)).eval(), {"input_shape": model.input_shape}
        sb = synbench(encoder, eps=SB_EPS, thresholds=DEFAULT_THRESHOLDS, scales=b.synbench_scales, n_train=b.synbench_n,
                      n_test=b.synbench_n, seed=12, batch_size=cache.batch_size(model, layer0), device=dev, **sb_kw)
        d = sb.to_dict()
        d["config"] = d["config"] | {"layer": layer0, "precision": feat_precision}
        results["synbench"] = {k: d[k] for k in ("scores", "best_eps", "eps", "thresholds", "scales", "accuracy", "bound",
                                                  "feature_dim", "config")}
        sc = sb.scores()[f"{SYNBENCH_THRESHOLD:g}"]
        sbn = f"{len(b.synbench_scales)} scales x {b.synbench_n} realizations per split"
        headline["synbench_score"] = _hl(sc["0"], n=len(b.synbench_scales) * b.synbench_n, detail=sbn)
        headline["synbench_robust_score"] = _hl(sc[f"{SYNBENCH_ROBUST_EPS:g}"], n=len(b.synbench_scales) * b.synbench_n, detail=sbn)
        curves["synbench"] = {
            "title": "SynBench expected-bound curve", "x": "threshold accuracy", "y": "expected bound",
            "n": f"{sbn}; feature dim {sb.feature_dim}",
            "series": {"eps 0": sb.curve_points(0.0), f"eps {SYNBENCH_ROBUST_EPS:g}": sb.curve_points(SYNBENCH_ROBUST_EPS),
                       "raw data (Bayes optimum)": d["synbench_curve_raw"]},
            "reference": ["raw data (Bayes optimum)"]}
    # 5. randomized smoothing of the probe
    def smoothing_cell(results: dict[str, Any], headline: dict[str, Any], curves: dict[str, Any]) -> None:
        from ..certify.smoothing import (
            certified_accuracy,
            certified_accuracy_curve,
            certify,
            image_generator,
        )

        c_data, _ = pick(te, b.cert_n, seed)
        nc = len(c_data)
        rows = []
        i = 0
        for xb, yb in c_data.batches(64):
            for xi, yi in zip(xb, yb.tolist()):
                c = certify(clf, xi.to(dev), b.cert_sigma, b.cert_n0, b.cert_samples, b.cert_alpha,
                            batch_size=max(b.cert_n0, min(b.cert_samples, 1000, max(abs_, 1))), generator=image_generator(seed, i, dev))
                rows.append({"predict": c.prediction, "radius": c.radius, "correct": int(c.prediction == int(yi))})
                i += 1
        radii, correct = [r["radius"] for r in rows], [bool(r["correct"]) for r in rows]
        r_max = b.cert_sigma * float(torch.special.ndtri(torch.tensor(b.cert_alpha ** (1.0 / b.cert_samples), dtype=torch.float64)))
        curve = certified_accuracy_curve(radii, correct, CERT_RADII)
        results["certification"] = {"sigma": b.cert_sigma, "n": nc, "n0": b.cert_n0, "samples": b.cert_samples,
                                    "alpha": b.cert_alpha, "max_certifiable_radius": r_max, "rows": rows,
                                    "certified_accuracy_vs_radius": curve, "noise_trained": False, "radius": CERT_RADIUS}
        headline["smoothed_accuracy"] = _acc(round(certified_accuracy(radii, correct, 0.0) * nc), nc)
        headline["certified_accuracy"] = _acc(round(certified_accuracy(radii, correct, CERT_RADIUS) * nc), nc) | {"radius": CERT_RADIUS}
        curves["certified"] = {
            "title": "Certified accuracy of the smoothed probe", "x": "l2 radius", "y": "certified accuracy",
            "n": f"n = {nc} images; sigma = {b.cert_sigma:g}, N = {b.cert_samples}, alpha = {b.cert_alpha:g} "
                 f"(no radius above {r_max:.3f} is certifiable); band: Wilson 95 %",
            "series": {"smoothed probe": curve},
            "band": {"smoothed probe": [[r, *wilson_interval(round(a * nc), nc)] for r, a in curve]}}
    # 6. pictures
    def pictures_cell(results: dict[str, Any], headline: dict[str, Any], curves: dict[str, Any]) -> None:
        results["figures"] = _pictures(model, clf, materialize(pick(te, b.picture_n, seed)[0])[0], layer0, b, seed, out)

    out.mkdir(parents=True, exist_ok=True)
    cells = {"embedding sensitivity": sensitivity_cell, "representation vulnerability": vulnerability_cell,
             "SynBench": synbench_cell, "randomized smoothing": smoothing_cell, **({"pictures": pictures_cell} if pictures else {})}
    figures: dict[str, Any] = {}
    fingerprint = {"kind": "profile", "model": module_digest(model), "dataset": dataset, "budget": b.to_dict(),
                   "layers": layers, "threat": thr.to_dict(), "seed": seed, "cells": list(cells), "precision": feat_precision}
    for part in run_cells(cells, stage, after_probe, out, fingerprint, resume, overwrite, shard):
        figures.update(part["results"].pop("figures", {}))
        results.update(part["results"])
        headline.update(part["headline"])
        curves.update(part["curves"])
        stage.seconds.update(part["seconds"])
    if not shard.is_main:
        return ProfileResult(None, out, out / "card.json", out / "card.html")  # type: ignore[arg-type]
    card = Card(
        source=str(source) if not isinstance(source, RobrepModel) else "python:" + type(source.net).__name__,
        model={"name": name or (str(source) if not isinstance(source, RobrepModel) else model.spec.arch),
               "arch": model.spec.arch, "input_shape": list(model.input_shape), "mean": list(model.spec.mean),
               "std": list(model.spec.std), "parameters": sum(p.numel() for p in model.parameters()),
               "feature_dim": int(fte.shape[1]), **model_note},
        dataset={"name": dataset, "num_classes": num_classes, "input_shape": list(te.info.input_shape), "adapted": adapted,
                 "train_n": len(tr), "test_n": len(te), "selection": {"train": tr.selection, "test": te.selection}},
        threat=thr.to_dict(), budget=b.to_dict(), seed=seed, layers=tuple(layers), headline=headline, results=results,
        curves=curves, figures=figures, seconds=stage.seconds | {"batch_size": float(cache.batch_size(model, layer0))},
        environment=environment() | {"feature_cache": {"hits": cache.hits, "misses": cache.misses},
                                     "precision": {"requested": precision, "features": feat_precision, "synbench": feat_precision,
                                                   "attacks": "fp32", "certification": "fp32", "probe_fit": "fp64"},
                                     "attack_batch_size": abs_},
        schema_version=SCHEMA_VERSION)
    cj = out / "card.json"
    atomic_write_json(cj, card.to_dict())
    from .html import write_card_html

    ch = write_card_html(card, out)
    return ProfileResult(card, out, cj, ch)


def _sensitivity(model: RobrepModel, data: ImageData, thr: ThreatModel, layer: str, steps: int, seed: int, batch: int,
                 clean: torch.Tensor | None) -> Any:
    """:func:`embedding_sensitivity` of the images of ``data``, ``batch`` at a time (one call,
    seeded ``seed``, when they fit in one batch; batch ``k`` is seeded ``seed + k``)."""
    from .sensitivity import SensitivityResult

    parts, i = [], 0
    for k, (xb, _) in enumerate(data.batches(batch)):
        cl = clean[i : i + len(xb)] if clean is not None else None
        parts.append(embedding_sensitivity(model, xb, thr, layer=layer, steps=steps, seed=seed + k, clean=cl))
        i += len(xb)
    if len(parts) == 1:
        return parts[0]
    return SensitivityResult(sum((p.ratios for p in parts), ()), sum((p.random_ratios for p in parts), ()), layer,
                             thr.to_dict(), steps)


def _pictures(model: RobrepModel, clf: torch.nn.Module, xte: torch.Tensor, layer: str, b: Budget, seed: int, out: Path) -> dict[str, Any]:
    from ..report import save_image_grid
    from ..visualize import invert, saliency

    dev = next(model.parameters()).device
    x = xte[: b.picture_n].to(dev)
    g = torch.Generator(device=dev).manual_seed(seed)
    step = 0.1 * math.sqrt(x[0].numel() / 784)  # l2 step scaled with the image size (0.1 at 28x28)
    inv = invert(model, x, layer=layer, steps=b.vis_steps, step_size=step, generator=g)
    save_image_grid([x, inv.x.detach()], out / "inversion.png", labels=["image", "inverted"])
    g1 = saliency(clf, x, method="gradient")
    g2 = saliency(clf, x, method="smoothgrad", samples=b.smoothgrad_samples, generator=g)
    save_image_grid([x, g1.image, g2.image], out / "saliency.png", labels=["image", "gradient", "SmoothGrad"])
    rel = float(inv.rep_error.mean())
    return {"inversion": {"file": "inversion.png", "n": len(x),
                          "caption": f"Inversion from noise ({b.vis_steps} l2 steps): images whose representation matches "
                                     f"the original's; mean relative representation error {rel:.3f}, n = {len(x)}"},
            "saliency": {"file": "saliency.png", "n": len(x),
                         "caption": f"Saliency of the probe's predicted class: input gradient and SmoothGrad "
                                    f"({b.smoothgrad_samples} samples), n = {len(x)}"}}
