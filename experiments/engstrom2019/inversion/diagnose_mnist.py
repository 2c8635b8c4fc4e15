"""Why is the robust MNIST model's inversion not better in SSIM? (docs/reproductions/engstrom2019-inversion.md)

Hypothesis: the linf-0.3 PGD-trained small-cnn thresholds its input (Madry et al. 2018 saw
thresholding first-layer filters), so its representation hardly changes when the uniform black
background of a digit is raised to grey; inversion from the grey noise start 0.5 + N(0, 0.05^2)
then has no reason to darken the background, which SSIM (luminance / contrast terms) penalises
while image l2 still improves.

Measured, standard vs robust, on the first N MNIST test images (background = pixels equal to 0
in the original, stroke = pixels > 0.5):

(a) mean background and stroke value of the inversions from noise, and the split of the squared
    image l2 into background and non-background pixels;
(b) l2 / SSIM after correcting the background: background pixels set to 0 (oracle mask), a
    per-image median stretch clamp((x - m) / (1 - m), 0, 1) (no oracle), a per-image least-squares
    affine fit a x + b to the original (oracle); also the representation error of the
    background-zeroed inversion;
(c) the representation's sensitivity to a uniform background shift: ||R(x + c bg) - R(x)|| /
    ||R(x)|| for c in 0.1..0.5, and the first conv layer's response to constant images;
(d) inversion from a black start clamp(N(0, 0.05^2), 0, 1) instead of the grey noise start.

    ROBREP_DATA=../shared/data OMP_NUM_THREADS=1 nice -n 19 python experiments/engstrom2019/inversion/diagnose_mnist.py \
        --zoo artifacts/zoo --n 50 --steps 300 --step-size 0.1 \
        --out artifacts/visualization/mnist/diagnose.json --figure docs/figures/visualization/mnist_diagnose.png

Four inversions of N images: about 50 s on one core for N = 50, 300 steps.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

import robrep
from robrep.report import save_image_grid
from robrep.visualize import image_l2, invert, mean_interval, ssim


def ci(v: torch.Tensor) -> dict[str, Any]:
    return mean_interval(v.double()).to_dict()


def masked_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return (x * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)


def rel_err(rep: torch.nn.Module, x: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (rep(x) - z_t).flatten(1).norm(dim=1) / z_t.flatten(1).norm(dim=1).clamp_min(1e-12)


def corrections(xi: torch.Tensor, x: torch.Tensor, bg: torch.Tensor) -> dict[str, torch.Tensor]:
    med = xi.flatten(1).median(1).values.view(-1, 1, 1, 1)
    stretch = ((xi - med) / (1 - med).clamp_min(1e-6)).clamp(0, 1)
    # least-squares a * xi + b ~ x per image (oracle: uses the original)
    u, v = xi.flatten(1).double(), x.flatten(1).double()
    um, vm = u.mean(1, keepdim=True), v.mean(1, keepdim=True)
    a = ((u - um) * (v - vm)).sum(1, keepdim=True) / ((u - um) ** 2).sum(1, keepdim=True).clamp_min(1e-12)
    affine = (a * (u - um) + vm).clamp(0, 1).view_as(x).to(x.dtype)
    return {"background_zeroed_oracle": xi * (1 - bg), "median_stretch": stretch, "affine_fit_oracle": affine}


def describe(rep: torch.nn.Module, xi: torch.Tensor, x: torch.Tensor, z_t: torch.Tensor, bg: torch.Tensor,
             stroke: torch.Tensor) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    d = (xi - x).double()
    out: dict[str, Any] = {
        "rep_error": ci(rel_err(rep, xi, z_t)), "l2": ci(image_l2(xi, x)), "ssim": ci(ssim(xi, x).double()),
        "mean_background": ci(masked_mean(xi, bg)), "mean_stroke": ci(masked_mean(xi, stroke)),
        "background_share_above_0.3": ci(masked_mean((xi > 0.3).to(xi.dtype), bg)),
        "l2sq_background": ci((d * bg).flatten(1).pow(2).sum(1)), "l2sq_rest": ci((d * (1 - bg)).flatten(1).pow(2).sum(1)),
    }
    per = {"l2": image_l2(xi, x), "ssim": ssim(xi, x).double()}
    out["corrected"] = {}
    for name, xc in corrections(xi, x, bg).items():
        out["corrected"][name] = {"l2": ci(image_l2(xc, x)), "ssim": ci(ssim(xc, x).double())}
        per[f"{name}_l2"], per[f"{name}_ssim"] = image_l2(xc, x), ssim(xc, x).double()
        if name == "background_zeroed_oracle":
            out["corrected"][name]["rep_error"] = ci(rel_err(rep, xc, z_t))
    return out, per


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--zoo", default="artifacts/zoo")
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--step-size", type=float, default=0.1)
    p.add_argument("--no-black", action="store_true", help="skip (d), the black-start inversions")
    p.add_argument("--out", default="artifacts/visualization/mnist/diagnose.json")
    p.add_argument("--figure", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    models = {k: robrep.load(Path(a.zoo) / n / "model.safetensors") for k, n in (("standard", "mnist-std"), ("robust", "mnist-pgd"))}
    x, _ = robrep.load_dataset("mnist", "test").head(a.n).tensors()
    bg = (x == 0).to(x.dtype)
    stroke = (x > 0.5).to(x.dtype)
    m: dict[str, Any] = {"n": a.n, "steps": a.steps, "step_size": a.step_size,
                         "background_fraction": float(bg.mean()), "stroke_fraction": float(stroke.mean()),
                         "original": {"mean_background": 0.0, "mean_stroke": ci(masked_mean(x, stroke))}}
    reps = {k: robrep.representation(md) for k, md in models.items()}
    with torch.no_grad():
        z = {k: r(x) for k, r in reps.items()}

    # (c) sensitivity to a uniform background shift, and the first conv layer on constant images
    m["background_shift_sensitivity"] = {}
    for k, r in reps.items():
        with torch.no_grad():
            m["background_shift_sensitivity"][k] = {f"c={c:g}": ci(rel_err(r, x + c * bg, z[k])) for c in (0.1, 0.2, 0.3, 0.4, 0.5)}
            # reference: the same l2 change spread as Gaussian noise over the whole image (c = 0.3)
            g = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
            g = g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * (0.3 * bg).flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            m["background_shift_sensitivity"][k]["noise_same_l2_as_c=0.3"] = ci(rel_err(r, (x + g).clamp(0, 1), z[k]))
    m["conv1_constant_images"] = {}
    for k, md in models.items():
        conv = md.net.conv1
        res = {}
        with torch.no_grad():
            for c in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 1.0):
                pre = conv(md.normalize(torch.full((1, 1, 28, 28), c)))[0, :, 14, 14]  # interior position
                res[f"c={c:g}"] = int((pre > 0).sum())
            # per-channel threshold: the constant grey level at which the interior response turns on
            w = conv.weight.sum((1, 2, 3)) / md.normalize.std.flatten()[0]
            b = conv.bias - md.normalize.mean.flatten()[0] * w
            thr = (-b / w).detach()
            aw = conv.weight.detach().abs().flatten(1)
            share = aw.max(1).values / aw.sum(1)
        m["conv1_constant_images"][k] = {"channels": conv.out_channels, "active_channels_at": res,
                                         "channels_with_threshold_in_(0,1]": int(((thr > 0) & (thr <= 1)).sum()),
                                         "thresholds_in_(0,1]": sorted(round(float(t), 3) for t in thr if 0 < t <= 1),
                                         "median_abs_weight": float(conv.weight.detach().abs().median()),
                                         "median_bias": float(conv.bias.detach().median()),
                                         # share of each filter's |weight| on its largest tap (1 = one-pixel filter:
                                         # relu(w (x_pixel - threshold)), a pixel threshold)
                                         "median_max_tap_share": float(share.median()),
                                         "one_pixel_channels_(max_tap_share>=0.95)": int((share >= 0.95).sum())}

    # (a), (b): inversion from the paper's noise start (same seed as run.py)
    starts = {"noise": "noise"}
    if not a.no_black:
        starts["black"] = (0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    inv: dict[str, dict[str, torch.Tensor]] = {}
    per: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    for sname, start in starts.items():
        m[f"inversion_from_{sname}"] = {}
        inv[sname], per[sname] = {}, {}
        for k, md in models.items():
            t1 = time.time()
            r = invert(md, x, start=start, steps=a.steps, step_size=a.step_size, generator=torch.Generator().manual_seed(0))
            inv[sname][k] = r.x
            m[f"inversion_from_{sname}"][k], per[sname][k] = describe(reps[k], r.x, x, z[k], bg, stroke)
            m[f"inversion_from_{sname}"][k]["seconds"] = time.time() - t1
        m[f"inversion_from_{sname}"]["robust_minus_standard"] = {
            q: ci(per[sname]["robust"][q] - per[sname]["standard"][q]) for q in per[sname]["robust"]}
        print(sname, json.dumps({k: {q: round(v[q]["mean"], 4) for q in ("rep_error", "l2", "ssim", "mean_background", "mean_stroke")}
                                 for k, v in m[f"inversion_from_{sname}"].items() if k != "robust_minus_standard"}), flush=True)
    if "black" in per:
        m["black_minus_noise_start"] = {k: {q: ci(per["black"][k][q] - per["noise"][k][q]) for q in ("l2", "ssim")} for k in models}
    m["seconds"] = time.time() - t0
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(m, indent=1))
    if a.figure:
        k8 = slice(0, 8)
        rows = [x[k8], inv["noise"]["standard"][k8], inv["noise"]["robust"][k8],
                corrections(inv["noise"]["robust"][k8], x[k8], bg[k8])["background_zeroed_oracle"]]
        labels = ["original", "std, grey start", "rob, grey start", "rob, bg set to 0"]
        if "black" in inv:
            rows += [inv["black"]["standard"][k8], inv["black"]["robust"][k8]]
            labels += ["std, black start", "rob, black start"]
        save_image_grid(rows, a.figure, labels=labels, scale=2)
    print(f"done in {m['seconds']:.0f}s -> {out}", flush=True)


if __name__ == "__main__":
    main()
