"""Engstrom et al. (2019) on MNIST / Fashion-MNIST: standard vs PGD-trained small-cnn (zoo models).

Quantitative inversion fidelity (relative representation error, image l2, SSIM; means with 95%
t-intervals and paired robust - standard differences) over the first N test images, the
brittleness demo, and image grids of every operation.

    ROBREP_DATA=../shared/data nice -n 10 python experiments/engstrom2019/inversion/run.py \
        --n 100 --steps 500 --step-size 0.1 --out artifacts/visualization --figures docs/figures/visualization

Writes ``<out>/<dataset>/metrics.json`` (+ ``record.json``, PNGs) and, with ``--figures``, small
PNGs for the docs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

import robrep
from robrep.report import amplify, save_image_grid
from robrep.runs import write_record
from robrep.visualize import (
    add_feature,
    brittleness,
    explain_misclassification,
    image_l2,
    interpolate,
    invert,
    mean_interval,
    saliency,
    ssim,
    top_activating,
    visualize_features,
)

ZOO = Path("artifacts/zoo")  # override with --zoo
PAIRS = {"mnist": ("mnist-std", "mnist-pgd"), "fashion-mnist": ("fmnist-std", "fmnist-pgd")}


def ci(v: torch.Tensor) -> dict[str, Any]:
    return mean_interval(v.double()).to_dict()


def fidelity(model: robrep.RobrepModel, x: torch.Tensor, start: Any, a: argparse.Namespace, seed: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    res = invert(model, x, start=start, steps=a.steps, step_size=a.step_size, generator=g)
    return {"x": res.x, "rep_error": res.rep_error.double(), "l2": image_l2(res.x, x), "ssim": ssim(res.x, x).double(),
            "seconds": time.time() - t0, "history": res.history}


def summarize(d: dict[str, Any]) -> dict[str, Any]:
    return {k: ci(d[k]) for k in ("rep_error", "l2", "ssim")} | {"seconds": d["seconds"]}


def run_dataset(name: str, a: argparse.Namespace, out: Path, figs: Path | None) -> dict[str, Any]:
    std_name, rob_name = PAIRS[name]
    paths = {"standard": Path(a.zoo) / std_name / "model.safetensors",
             "robust": Path(a.robust_zoo or a.zoo) / rob_name / "model.safetensors"}
    models = {k: robrep.load(p) for k, p in paths.items()}
    data = robrep.load_dataset(name, "test")
    xs, ys = data.head(max(a.n, a.search_n)).tensors()
    x, y = xs[: a.n], ys[: a.n]
    out.mkdir(parents=True, exist_ok=True)
    m: dict[str, Any] = {"dataset": name, "n": a.n, "models": {k: str(p) for k, p in paths.items()}}
    with torch.no_grad():
        m["clean_accuracy"] = {k: float((md(xs).argmax(1) == ys).float().mean()) for k, md in models.items()}

    # 1. inversion from noise (paper) for every step size; the first is the headline setting
    inv: dict[str, dict[str, Any]] = {}
    m["inversion"] = {}
    for eta in a.step_sizes:
        aa = argparse.Namespace(**{**vars(a), "step_size": eta})
        res = {k: fidelity(md, x, "noise", aa, seed=0) for k, md in models.items()}
        key = f"eta={eta:g}"
        m["inversion"][key] = {k: summarize(v) for k, v in res.items()}
        m["inversion"][key]["robust_minus_standard"] = {
            q: ci(res["robust"][q] - res["standard"][q]) for q in ("rep_error", "l2", "ssim")}
        if not inv:
            inv = res
    noise = robrep.visualize.noise_seed(x.shape, generator=torch.Generator().manual_seed(0))
    m["baseline_noise_start"] = {"l2": ci(image_l2(noise, x)), "ssim": ci(ssim(noise.clamp(0, 1), x).double())}

    # 1b. inversion seeded from another image (the next one): does the result leave the seed?
    xo = x[: a.n_other]
    other = xo.roll(1, 0)
    m["inversion_from_other_image"] = {"n": len(xo)}
    other_x = {}
    for k, md in models.items():
        r = invert(md, xo, start=other, steps=a.steps, step_size=a.step_size)
        other_x[k] = r.x
        m["inversion_from_other_image"][k] = {"rep_error": ci(r.rep_error.double()), "ssim_to_target": ci(ssim(r.x, xo).double()),
                                               "ssim_to_seed": ci(ssim(r.x, other).double())}

    # 2. brittleness: x_source + delta (||delta||_2 <= eps) matching R(x_target), for each eps
    m["brittleness"] = {}
    br = {}
    for eps in a.brittle_eps:
        m["brittleness"][f"eps={eps:g}"] = {}
        for k, md in models.items():
            b = brittleness(md, x, x.roll(-1, 0), eps=eps, steps=a.brittle_steps, generator=torch.Generator().manual_seed(0))
            br[k] = b  # the last (largest) eps is drawn
            m["brittleness"][f"eps={eps:g}"][k] = {
                "rep_error_before": ci(b.rep_error_before.double()), "rep_error_after": ci(b.rep_error_after.double()),
                "dist_source_max": float(b.dist_source.max()), "ssim_adv_to_source": ci(ssim(b.x_adv, x).double())}

    k8 = slice(0, 8)
    grids = {
        "inversion.png": ([x[k8], inv["standard"]["x"][k8], inv["robust"]["x"][k8]], ["original", "standard", "robust"]),
        "inversion_from_other.png": ([other[k8], xo[k8], other_x["standard"][k8], other_x["robust"][k8]],
                                     ["seed", "target", "standard", "robust"]),
        "brittleness.png": ([x[k8], br["standard"].x_adv[k8], br["robust"].x_adv[k8], x.roll(-1, 0)[k8]],
                            ["source", "std: src+delta", "rob: src+delta", "target"]),
    }

    # 3. feature visualization (fake ReLU) from noise, with top / bottom test images
    m["features"] = {}
    for k, md in models.items():
        rep = robrep.representation(md)
        with torch.no_grad():
            z = torch.cat([rep(xs[i:i + 1000]) for i in range(0, len(xs), 1000)])
        active = (z.max(0).values > 0).nonzero().flatten()
        comps = active[torch.randperm(len(active), generator=torch.Generator().manual_seed(0))[: a.components]].tolist()
        vis = visualize_features(md, comps, "noise", n=4, steps=a.vis_steps, step_size=a.step_size, fake_relu=True,
                                 generator=torch.Generator().manual_seed(1))
        rows, labels = [], []
        for j, c in enumerate(comps):
            top = top_activating(md, xs, c, k=5)
            rows.append(torch.cat([vis.x[j], top.top_images, top.bottom_images]))
            labels.append(f"#{c}")
        grids[f"features_{k}.png"] = (rows, labels)
        m["features"][k] = {"components": comps, "active_units": len(active), "dim": z.shape[1],
                            "activation_start": vis.activation_start.mean(1).tolist(), "activation": vis.activation.mean(1).tolist()}

    # 4. feature addition: the component with the largest mean activation, target = its test-set max
    m["feature_addition"] = {}
    for k, md in models.items():
        rep = robrep.representation(md)
        with torch.no_grad():
            z = rep(xs)
        c = int(z.mean(0).argmax())
        target = float(z[:, c].max())
        fa = add_feature(md, x[k8], c, target_activation=target, steps=a.add_steps, step_size=a.add_step_size)
        grids[f"feature_addition_{k}.png"] = ([x[k8], fa.x, amplify(fa.x - x[k8])], ["original", f"+ #{c}", "difference"])
        m["feature_addition"][k] = {"component": c, "target": target, "before": fa.before.mean().item(), "after": fa.after.mean().item(),
                                    "reached": (fa.after >= target - 1e-6).float().mean().item(), "l2_change": fa.dist.mean().item()}

    # 5. interpolation between 3 pairs
    m["interpolation"] = {}
    for k, md in models.items():
        ip = interpolate(md, x[0:3], x[3:6], n=8, steps=a.steps, step_size=a.step_size)
        rows = []
        for b in range(3):
            rows += [ip.pixel[b], ip.x[b]]
        grids[f"interpolation_{k}.png"] = (rows, ["pixels", "inverted"] * 3)
        m["interpolation"][k] = {"rep_error": ip.rep_error.mean().item()}

    # 6. misclassification insight: first 6 misclassified test images, top-3 components pushed
    m["misclassification"] = {}
    for k, md in models.items():
        with torch.no_grad():
            pred = md(xs).argmax(1)
        wrong = (pred != ys).nonzero().flatten()[:6]
        if len(wrong) == 0:
            m["misclassification"][k] = {"indices": []}
            continue
        ex = explain_misclassification(md, xs[wrong], ys[wrong], k=3, steps=a.vis_steps, step_size=a.add_step_size)
        grids[f"misclassification_{k}.png"] = ([xs[wrong]] + [ex.x_pushed[:, j] for j in range(3)],
                                               ["input", "top-1 pushed", "top-2 pushed", "top-3 pushed"])
        m["misclassification"][k] = {"indices": wrong.tolist(), "label": ex.label.tolist(), "pred": ex.pred.tolist(),
                                     "components": ex.components.tolist(), "pred_pushed": ex.pred_pushed.tolist(),
                                     "pushed_keeps_wrong_class": (ex.pred_pushed == ex.pred[:, None]).float().mean().item()}

    # 7. saliency: gradient and SmoothGrad
    srows, slabels = [x[k8]], ["image"]
    m["saliency"] = {}
    for k, md in models.items():
        gr = saliency(md, x[k8], y[k8], method="gradient")
        sg = saliency(md, x[k8], y[k8], method="smoothgrad", samples=50, generator=torch.Generator().manual_seed(0))
        srows += [gr.image, sg.image]
        slabels += [f"{k} grad", f"{k} SmoothGrad"]
        # alignment of |gradient| with the digit / object: correlation of |g| with the image
        corr = [float(torch.corrcoef(torch.stack([gr.image[i].flatten(), x[i].flatten()]))[0, 1]) for i in range(8)]
        m["saliency"][k] = {"corr_abs_grad_with_image": sum(corr) / len(corr)}
    grids["saliency.png"] = (srows, slabels)

    for fname, (rows, labels) in grids.items():
        p = save_image_grid(rows, out / fname, labels=labels, scale=2)
        if figs is not None:
            figs.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, figs / f"{'mnist' if name == 'mnist' else 'fmnist'}_{fname}")
    hist = {k: v["history"][:: max(1, a.steps // 50)].tolist() for k, v in inv.items()}
    (out / "metrics.json").write_text(json.dumps(m, indent=1))
    write_record(out, "experiments/engstrom2019/inversion/run.py", {k: v for k, v in vars(a).items()}, m, loss_history=hist)
    return m


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", default="mnist,fashion-mnist")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--search-n", type=int, default=2000)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--step-size", type=float, default=0.1)
    p.add_argument("--extra-step-sizes", default="0.3")
    p.add_argument("--brittle-eps", default="1.5,3")
    p.add_argument("--n-other", type=int, default=20, help="images inverted from another image's start")
    p.add_argument("--brittle-steps", type=int, default=200)
    p.add_argument("--vis-steps", type=int, default=200)
    p.add_argument("--add-steps", type=int, default=300)
    p.add_argument("--add-step-size", type=float, default=0.05)
    p.add_argument("--components", type=int, default=4)
    p.add_argument("--zoo", default=str(ZOO))
    p.add_argument("--robust-zoo", default=None, help="folder of the PGD models if not --zoo (train_fallback.sh)")
    p.add_argument("--out", default="artifacts/visualization")
    p.add_argument("--figures", default=None)
    a = p.parse_args()
    a.step_sizes = [a.step_size] + [float(s) for s in a.extra_step_sizes.split(",") if s]
    a.brittle_eps = [float(e) for e in a.brittle_eps.split(",")]
    torch.set_num_threads(1)
    for name in a.datasets.split(","):
        t0 = time.time()
        m = run_dataset(name, a, Path(a.out) / name, Path(a.figures) if a.figures else None)
        h = m["inversion"][f"eta={a.step_size:g}"]
        print(name, f"{time.time() - t0:.0f}s", json.dumps({k: {q: round(v[q]["mean"], 4) for q in ("rep_error", "l2", "ssim")}
                                                             for k, v in h.items()}), flush=True)


if __name__ == "__main__":
    main()
