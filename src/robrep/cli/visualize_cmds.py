"""``robrep invert | visualize | add-feature | interpolate | explain | saliency``: Engstrom et al.
(2019) representation operations on a checkpoint's test images, with PNG grids and a record."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import add_checkpoint, add_common, dataset_arg, emit, load_checkpoint_arg


def _opt_args(p: argparse.ArgumentParser, steps: int, step_size: float, *, layer: bool = True) -> None:
    add_checkpoint(p)
    p.add_argument("--dataset", default=None, help="default: the checkpoint's training dataset")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--n", type=int, default=8, help="number of images (the first n of the split)")
    if layer:
        p.add_argument("--layer", default="penultimate", help="representation layer (robrep list-layers; default penultimate)")
    p.add_argument("--steps", type=int, default=steps, help=f"optimizer iterations (paper: {steps})")
    p.add_argument("--step-size", type=float, default=step_size, help="l2 length of each normalized-gradient step")
    p.add_argument("--radius", type=float, default=1000.0, help="l2 ball around the start (paper: 1000, i.e. inactive)")
    p.add_argument("--fake-relu", action="store_true", help="straight-through last ReLU before the layer")
    add_common(p)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("invert", help="representation inversion (Engstrom et al. 2019) with fidelity metrics and a grid")
    _opt_args(p, 10_000, 1.0)
    p.add_argument("--start", default="noise", choices=["noise", "gray", "other"],
                   help="noise 0.5+N(0,0.05^2) (paper), gray, or other test images (the next image)")
    p.add_argument("--use-best", action="store_true", help="keep the best iterate (paper: final iterate)")
    p.add_argument("--brittle-eps", type=float, default=None,
                   help="also run the brittleness demo: match the next image's representation within this l2 radius")
    p.set_defaults(func=run_invert)

    p = sub.add_parser("visualize", help="feature visualization: inputs maximizing components, plus top/bottom test images")
    _opt_args(p, 200, 1.0)
    p.add_argument("--components", default=None, help="comma-separated indices (default: 5 random, from --seed)")
    p.add_argument("--start", default="noise", choices=["noise", "gray", "images"], help="seeds: noise, gray, or the n test images")
    p.add_argument("--top-k", type=int, default=5, help="top / bottom activating images shown per component")
    p.add_argument("--search-n", type=int, default=1000, help="test images searched for top / bottom activations")
    p.set_defaults(func=run_visualize)

    p = sub.add_parser("add-feature", help="feature addition: push one component of test images up to a target activation")
    _opt_args(p, 800, 0.1)
    p.add_argument("--component", type=int, required=True)
    p.add_argument("--target", type=float, default=None,
                   help="target activation (default: the component's maximum over --search-n test images)")
    p.add_argument("--search-n", type=int, default=1000)
    p.set_defaults(func=run_add_feature)

    p = sub.add_parser("interpolate", help="invert interpolations of two images' representations")
    _opt_args(p, 10_000, 1.0)
    p.add_argument("--points", type=int, default=10, help="interpolation points lambda = j/(points-1)")
    p.set_defaults(func=run_interpolate)

    p = sub.add_parser("explain", help="misclassification insight: components behind the wrong class, input pushed along them")
    _opt_args(p, 200, 1.0, layer=False)
    p.add_argument("--k", type=int, default=3, help="components per image")
    p.add_argument("--search-n", type=int, default=2000, help="test images searched for misclassified ones")
    p.set_defaults(func=run_explain)

    p = sub.add_parser("saliency", help="input-gradient and SmoothGrad saliency maps")
    add_checkpoint(p)
    p.add_argument("--dataset", default=None)
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--samples", type=int, default=50, help="SmoothGrad noisy copies")
    p.add_argument("--noise-level", type=float, default=0.15, help="SmoothGrad sigma / image value range")
    add_common(p)
    p.set_defaults(func=run_saliency)


def _setup(args: argparse.Namespace, n: int | None = None) -> tuple[Any, Any, Any, Any, Path]:
    import torch

    from ..data import load_dataset
    from ..errors import InputError

    torch.manual_seed(args.seed)
    model, meta = load_checkpoint_arg(args)
    dataset = dataset_arg(args, meta)
    data = load_dataset(dataset, args.split, root=args.data_root, download=args.download)
    n = args.n if n is None else n
    if n <= 0:
        raise InputError(f"--n must be positive, got {n}")
    x, y = next(iter(data.head(n).batches(n)))
    dev = next(model.parameters()).device
    out = Path(args.out or f"runs/{args.command}")
    return model, x.to(dev), y.to(dev), data, out


def _finish(args: argparse.Namespace, out: Path, result: dict[str, Any], summary: str) -> int:
    from ..runs import write_record

    write_record(out, args.command, {k: v for k, v in vars(args).items() if k != "func"}, result)
    emit(result, args.json, summary)
    return 0


def _fidelity(x_hat: Any, x: Any, rep_error: Any) -> dict[str, Any]:
    from ..visualize import image_l2, mean_interval, ssim

    d: dict[str, Any] = {"rep_error": rep_error.float().mean().item(), "image_l2": image_l2(x_hat, x).mean().item()}
    if min(x.shape[2:]) >= 11:
        d["ssim"] = ssim(x_hat, x).mean().item()
    if x.shape[0] >= 2:
        d["rep_error_ci"] = mean_interval(rep_error).to_dict()
        d["image_l2_ci"] = mean_interval(image_l2(x_hat, x)).to_dict()
        if "ssim" in d:
            d["ssim_ci"] = mean_interval(ssim(x_hat, x)).to_dict()
    return d


def run_invert(args: argparse.Namespace) -> int:
    import torch

    from ..report import save_image_grid
    from ..visualize import brittleness, invert

    model, x, y, _, out = _setup(args)
    g = torch.Generator(device=x.device).manual_seed(args.seed)
    start: Any = x.roll(1, 0) if args.start == "other" else args.start
    res = invert(model, x, layer=args.layer, start=start, steps=args.steps, step_size=args.step_size, eps=args.radius,
                 use_best=args.use_best, fake_relu=args.fake_relu, generator=g)
    result: dict[str, Any] = {"n": x.shape[0], **_fidelity(res.x, x, res.rep_error)}
    result["grid"] = str(save_image_grid([x, res.start.clamp(0, 1), res.x], out / "inversion.png",
                                         labels=["original", "start", "inversion"]))
    if args.brittle_eps is not None and x.shape[0] >= 2:
        br = brittleness(model, x, x.roll(-1, 0), eps=args.brittle_eps, layer=args.layer, generator=g)
        result["brittle_rep_error_before"] = br.rep_error_before.mean().item()
        result["brittle_rep_error_after"] = br.rep_error_after.mean().item()
        result["brittle_grid"] = str(save_image_grid([br.x_source, br.x_adv, br.x_target], out / "brittleness.png",
                                                     labels=["source", "source + delta", "target"]))
    s = (f"inverted {x.shape[0]} images: relative representation error {result['rep_error']:.4f}, "
         f"image l2 {result['image_l2']:.3f}" + (f", SSIM {result['ssim']:.3f}" if "ssim" in result else "") + f"; grid {result['grid']}")
    return _finish(args, out, result, s)


def _components(arg: str | None, dim: int, seed: int) -> list[int]:
    import torch

    if arg:
        return [int(c) for c in arg.split(",") if c.strip()]
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(dim, generator=g)[: min(5, dim)].tolist()


def run_visualize(args: argparse.Namespace) -> int:
    import torch

    from ..report import save_image_grid
    from ..visualize import as_representation, top_activating, visualize_features

    model, x, _, data, out = _setup(args)
    with torch.no_grad():
        dim = as_representation(model, args.layer)(x[:1]).shape[1]
    comps = _components(args.components, dim, args.seed)
    g = torch.Generator(device=x.device).manual_seed(args.seed)
    start: Any = x if args.start == "images" else args.start
    vis = visualize_features(model, comps, start, n=x.shape[0], layer=args.layer, steps=args.steps, step_size=args.step_size,
                             eps=args.radius, fake_relu=args.fake_relu, generator=g)
    search, _ = next(iter(data.head(args.search_n).batches(args.search_n)))
    rows, labels, per = [vis.start.clamp(0, 1)], ["start"], {}
    for j, c in enumerate(comps):
        top = top_activating(model, search.to(x.device), c, k=min(args.top_k, len(search)), layer=args.layer)
        rows += [vis.x[j], top.top_images, top.bottom_images]
        labels += [f"#{c} max", f"#{c} top", f"#{c} bottom"]
        per[str(c)] = {"activation": vis.activation[j].mean().item(), "activation_start": vis.activation_start[j].mean().item(),
                       "top_value": top.top_value.tolist(), "bottom_value": top.bottom_value.tolist()}
    grid = save_image_grid(rows, out / "features.png", labels=labels)
    result = {"components": comps, "per_component": per, "grid": str(grid)}
    return _finish(args, out, result, f"visualized components {comps}; grid {grid}")


def run_add_feature(args: argparse.Namespace) -> int:
    from ..report import amplify, save_image_grid
    from ..visualize import add_feature, top_activating

    model, x, _, data, out = _setup(args)
    target = args.target
    if target is None:
        search, _ = next(iter(data.head(args.search_n).batches(args.search_n)))
        target = float(top_activating(model, search.to(x.device), args.component, k=1, layer=args.layer).top_value[0])
    res = add_feature(model, x, args.component, target_activation=target, layer=args.layer, steps=args.steps,
                      step_size=args.step_size, eps=args.radius, fake_relu=args.fake_relu)
    grid = save_image_grid([x, res.x, amplify(res.x - x)], out / "feature_addition.png",
                           labels=["original", f"+ feature {args.component}", "difference"])
    result = {"component": args.component, "target_activation": target, "before": res.before.mean().item(),
              "after": res.after.mean().item(), "reached": (res.after >= target - 1e-6).float().mean().item(),
              "l2_change": res.dist.mean().item(), "grid": str(grid)}
    return _finish(args, out, result, f"feature {args.component}: {result['before']:.3f} -> {result['after']:.3f} (target {target:.3f}); grid {grid}")


def run_interpolate(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..report import save_image_grid
    from ..visualize import interpolate

    model, x, _, _, out = _setup(args, n=2 * args.n)
    if x.shape[0] < 2:
        raise InputError("need at least 2 images")
    h = x.shape[0] // 2
    res = interpolate(model, x[:h], x[h:2 * h], n=args.points, layer=args.layer, steps=args.steps, step_size=args.step_size,
                      eps=args.radius, fake_relu=args.fake_relu)
    rows, labels = [], []
    for b in range(h):
        rows += [res.pixel[b], res.x[b]]
        labels += [f"pair {b} pixels", f"pair {b} inverted"]
    grid = save_image_grid(rows, out / "interpolation.png", labels=labels)
    result = {"pairs": h, "points": args.points, "rep_error": res.rep_error.mean().item(),
              "rep_error_per_lambda": res.rep_error.mean(0).tolist(), "grid": str(grid)}
    return _finish(args, out, result, f"interpolated {h} pairs, mean relative representation error {result['rep_error']:.4f}; grid {grid}")


def run_explain(args: argparse.Namespace) -> int:
    import torch

    from ..report import save_image_grid
    from ..visualize import explain_misclassification

    model, xs, ys, _, out = _setup(args, n=max(args.search_n, args.n))
    with torch.no_grad():
        pred = torch.cat([model(xs[i:i + 500]).argmax(1) for i in range(0, len(xs), 500)])
    wrong = (pred != ys).nonzero().flatten()[: args.n]
    found = len(wrong)
    idx = wrong if found else torch.arange(min(args.n, len(xs)), device=xs.device)
    x, y = xs[idx], ys[idx]
    res = explain_misclassification(model, x, y, k=args.k, steps=args.steps, step_size=args.step_size, eps=args.radius,
                                    fake_relu=args.fake_relu)
    classes = getattr(getattr(model, "spec", None), "num_classes", None)
    grid = save_image_grid([x] + [res.x_pushed[:, j] for j in range(args.k)], out / "misclassification.png",
                           labels=["input"] + [f"top-{j + 1} component pushed" for j in range(args.k)])
    result = {"misclassified_found": found, "indices": idx.tolist(), "label": res.label.tolist(), "pred": res.pred.tolist(),
              "components": res.components.tolist(),
              "contributions": res.contributions.gather(1, res.components).tolist(),
              "pred_pushed": res.pred_pushed.tolist(), "num_classes": classes, "grid": str(grid)}
    return _finish(args, out, result, f"explained {len(idx)} predictions ({found} misclassified found); grid {grid}")


def run_saliency(args: argparse.Namespace) -> int:
    import torch

    from ..report import save_image_grid
    from ..visualize import saliency

    model, x, y, _, out = _setup(args)
    g = torch.Generator(device=x.device).manual_seed(args.seed)
    gr = saliency(model, x, y, method="gradient")
    sg = saliency(model, x, y, method="smoothgrad", samples=args.samples, noise_level=args.noise_level, generator=g)
    grid = save_image_grid([x, gr.image, sg.image], out / "saliency.png", labels=["image", "gradient", "SmoothGrad"])
    cos = torch.nn.functional.cosine_similarity(gr.grad.flatten(1), sg.grad.flatten(1), dim=1)
    result = {"n": x.shape[0], "gradient_smoothgrad_cosine": cos.mean().item(), "grid": str(grid)}
    return _finish(args, out, result, f"saliency maps of {x.shape[0]} images; grid {grid}")
