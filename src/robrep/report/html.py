"""One self-contained HTML report for one or more run folders (figures embedded, no network).

A run folder holds ``record.json`` (or ``metrics.json``), optional ``*.json`` results of other
measurements, and ``*.png`` figures; the report shows a comparison table of scalar metrics (with
a one-line meaning for known keys, :data:`METRIC_HELP`), curves drawn from known keys
(:data:`CURVE_KEYS`, with a reference curve where :data:`CURVE_REFERENCES` names one), the
per-epoch curves of a training run (loss, accuracies, lr: from the ``history`` that
``robrep train`` writes into ``record.json``), and every
PNG, grouped by file name so that the same picture of each run stands side by side.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_write_text

__all__ = ["write_report", "collect_run", "history_curves", "HISTORY_GROUPS", "CURVE_KEYS", "CURVE_REFERENCES", "FIGURE_HELP", "FIGURE_STATUS", "METRIC_HELP"]

# metrics key -> (x label, y label, title) for curves stored as [[x, y], ...]
CURVE_KEYS: dict[str, tuple[str, str, str]] = {
    "robust_accuracy_vs_eps": ("eps", "robust accuracy", "Robust accuracy vs eps"),
    "certified_accuracy_vs_radius": ("radius", "certified accuracy", "Certified accuracy vs radius"),
    "vulnerability_per_layer": ("layer", "vulnerability (nats)", "Representation vulnerability per layer"),
    "synbench_curve": ("threshold accuracy", "expected bound", "SynBench expected-bound curve"),
}

# curve key -> (metrics key of a reference curve drawn once, dashed, from the first run that has it, its label)
CURVE_REFERENCES: dict[str, tuple[str, str]] = {
    "synbench_curve": ("synbench_curve_raw", "raw data (Bayes optimum)"),
}

# metrics key -> what it means (shown beside the comparison table)
METRIC_HELP: dict[str, str] = {
    "clean_accuracy": "test accuracy",
    "robust_accuracy": "test accuracy under the PGD attack at the run's eps",
    "n": "test images evaluated",
    "train_seconds": "training wall time (s)",
    "mi_clean": "I(X; R(X)) of the penultimate layer (nats, InfoNCE bound)",
    "mi_worst": "worst-case I(X'; R(X')) within the eps ball (nats)",
    "vulnerability": "representation vulnerability mi_clean - mi_worst (nats; lower is more robust)",
    "vulnerability_low": "95 % interval of the vulnerability, low end",
    "vulnerability_high": "95 % interval of the vulnerability, high end",
    "accuracy_bound": "Fano bound on the adversarial accuracy of any classifier on the representation (1: no constraint)",
    "synbench_score": "SynBench score, threshold accuracy 0.7, eps 0 (1 = raw-data optimum)",
    "synbench_robust_score": "SynBench score, threshold accuracy 0.7, relative radius eps 0.2",
    "probe_natural_accuracy": "linear probe on the frozen penultimate layer: clean accuracy",
    "probe_adversarial_accuracy": "linear probe: accuracy under PGD at the run's eps (end to end)",
    "smoothed_accuracy": "Gaussian-smoothed classifier: accuracy (abstentions wrong)",
    "certified_accuracy_r0.25": "certified accuracy at l2 radius 0.25 (randomized smoothing)",
    "abstain_rate": "smoothed classifier abstentions",
    "brittleness_rep_error": "relative representation gap after moving an image by l2 <= eps toward another's (low: brittle)",
    "brittleness_rep_error_before": "relative representation gap of the two images before",
    "inversion_rep_error": "relative representation error of the inversions from noise",
    "inversion_ssim": "SSIM of inversion and original image (higher: the representation keeps the image)",
}

# PNG file stem -> caption (figures are shown in this order, unknown ones after them)
FIGURE_HELP: dict[str, str] = {
    "attack_grid": "PGD adversarial examples at the run's eps and their perturbations (amplified)",
    "brittleness": "Brittleness: the source moved by l2 <= eps to match the target's representation",
    "inversion": "Inversion: images whose representation matches the original's, optimized from noise",
    "interpolation": "Interpolation: inversions of interpolated representations (from the pixel interpolation)",
    "features": "Feature visualization: inputs maximizing the most active penultimate components",
    "saliency": "Saliency: input gradient and SmoothGrad of the predicted class",
}


#: the self-check a browser (or a test) reads after load: how many ``img.figure`` decoded
#: (``data-broken`` lists the alt texts of those that did not, separated by '|')
FIGURE_STATUS = ("<p id='figure-status' data-total='0' data-loaded='0' data-broken=''></p><script>window.addEventListener('load',function(){"
                 "var im=document.querySelectorAll('img.figure'),n=0,bad=[];for(var i=0;i<im.length;i++){"
                 "if(im[i].complete&&im[i].naturalWidth>0){n++;}else{bad.push(im[i].alt);}}"
                 "var s=document.getElementById('figure-status');s.dataset.total=im.length;s.dataset.loaded=n;s.dataset.broken=bad.join('|');"
                 "s.textContent=n+' of '+im.length+' figures rendered';});</script>")


def _load_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def collect_run(run: Path) -> dict[str, Any]:
    """Metrics (flattened scalars), curves and figures of a run folder."""
    metrics: dict[str, Any] = {}
    rec = _load_json(run / "record.json") or {}
    metrics.update(rec.get("metrics") or {})
    m2 = _load_json(run / "metrics.json")
    if isinstance(m2, dict):
        metrics.update(m2)
    for extra in sorted(run.glob("*.json")):
        if extra.name in ("record.json", "metrics.json", "config.json"):
            continue
        d = _load_json(extra)
        if isinstance(d, dict):
            metrics.update({k: v for k, v in d.items() if k not in metrics})
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    curve_names = set(CURVE_KEYS) | {ref for ref, _ in CURVE_REFERENCES.values()}
    curves = {k: v for k, v in metrics.items() if k in curve_names and isinstance(v, list)}
    figs = sorted(run.glob("*.png"))
    history = rec.get("history")
    if isinstance(history, list) and history and all(isinstance(h, dict) for h in history):
        curves.update(history_curves(history))
    return {"name": run.name, "path": str(run), "scalars": scalars, "curves": curves, "figures": figs,
            "config": rec.get("config"), "environment": rec.get("environment"),
            "provenance": {k: v for k, v in rec.items() if k != "metrics"}}


def history_curves(history: list[dict[str, Any]]) -> dict[str, list[list[float]]]:
    """Per-epoch curves of a training run's ``history`` (what ``robrep train`` writes into
    ``record.json``): ``{"history:<key>": [[epoch, value], ...]}`` for every numeric key
    (``epoch`` and ``epoch_seconds`` excepted); :data:`HISTORY_GROUPS` puts them into figures."""
    keys: list[str] = []
    for h in history:
        keys += [k for k, v in h.items() if k not in keys and k not in ("epoch", "epoch_seconds")
                 and isinstance(v, (int, float)) and not isinstance(v, bool)]
    out: dict[str, list[list[float]]] = {}
    for k in keys:
        pts = [[float(h.get("epoch", i + 1)), float(h[k])] for i, h in enumerate(history)
               if isinstance(h.get(k), (int, float)) and not isinstance(h.get(k), bool)]
        if pts:
            out[f"history:{k}"] = pts
    return out


#: figure of per-epoch curves -> (title, y label, which history keys it draws)
HISTORY_GROUPS: dict[str, tuple[str, str]] = {
    "training_loss": ("Training loss per epoch", "loss"),
    "training_accuracy": ("Accuracy per epoch (training batches, test clean and robust)", "accuracy"),
    "training_lr": ("Learning rate per epoch", "lr"),
    "training_other": ("Other training metrics per epoch", "value"),
}


def _history_group(key: str) -> str:
    k = key.split(":", 1)[1]
    if k == "lr":
        return "training_lr"
    if "loss" in k:
        return "training_loss"
    if "acc" in k:
        return "training_accuracy"
    return "training_other"


def _history_figure(group: str, runs: list[dict[str, Any]]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    title, ylabel = HISTORY_GROUPS[group]
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=100)
    drawn = False
    for r in runs:
        for key, pts in r["curves"].items():
            if not key.startswith("history:") or _history_group(key) != group:
                continue
            label = key.split(":", 1)[1] if len(runs) == 1 else f"{r['name']}: {key.split(':', 1)[1]}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) <= 30 else None, label=label)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return _png_b64(buf.getvalue())


def _png_b64(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _curve_figure(key: str, runs: list[dict[str, Any]]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xl, yl, title = CURVE_KEYS[key]
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=100)
    drawn = False
    for r in runs:
        pts = r["curves"].get(key)
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        ax.plot(range(len(xs)) if isinstance(xs[0], str) else xs, ys, marker="o" if len(xs) <= 25 else None, label=r["name"])
        if isinstance(xs[0], str):
            ax.set_xticks(range(len(xs)), xs, rotation=30, fontsize=7)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    if key in CURVE_REFERENCES:
        ref_key, ref_label = CURVE_REFERENCES[key]
        ref = next((r["curves"][ref_key] for r in runs if r["curves"].get(ref_key)), None)
        if ref:
            ax.plot([p[0] for p in ref], [p[1] for p in ref], color="black", ls="--", lw=1.2, label=ref_label)
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return _png_b64(buf.getvalue())


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape(str(v))


def _figure_order(infos: list[dict[str, Any]]) -> list[str]:
    stems: list[str] = []
    for i in infos:
        stems += [f.stem for f in i["figures"] if f.stem not in stems]
    known = [k for k in FIGURE_HELP if k in stems]
    return known + sorted(k for k in stems if k not in FIGURE_HELP)


def write_report(runs: Sequence[str | os.PathLike[str]], path: str | os.PathLike[str], *, title: str = "robrep report",
                 notes: Sequence[str] = ()) -> Path:
    """Write ``path`` (HTML) comparing ``runs``; returns the path.

    Args:
        runs: run folders (each becomes a table column and a figure column).
        path: the HTML file (written atomically; self-contained: figures are data URIs).
        title: page title.
        notes: plain-text paragraphs shown under the title (how the numbers were measured).
    """
    infos = [collect_run(Path(r)) for r in runs]
    keys: list[str] = []
    for i in infos:
        keys += [k for k in i["scalars"] if k not in keys]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#eee}"
             "img{max-width:100%;border:1px solid #ddd;margin:4px}figure{display:inline-block;margin:8px}"
             "figcaption{font-size:0.85em;color:#444}.help{font-size:0.85em;color:#555;text-align:left}"
             ".note{color:#333;max-width:1000px}.row{display:flex;align-items:flex-start}"
             ".row figure{flex:1 1 0;min-width:0;margin:4px}.row img{width:100%;image-rendering:pixelated}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in notes]
    parts.append("<h2>Comparison</h2><table id='comparison'><tr><th>metric</th>")
    parts += [f"<th>{html.escape(i['name'])}</th>" for i in infos]
    parts.append("<th style='text-align:left'>meaning</th></tr>")
    for k in keys:
        parts.append(f"<tr><td style='text-align:left'>{html.escape(k)}</td>"
                     + "".join(f"<td data-key='{html.escape(k)}'>{_fmt(i['scalars'].get(k, ''))}</td>" for i in infos)
                     + f"<td class='help'>{html.escape(METRIC_HELP.get(k, ''))}</td></tr>")
    parts.append("</table>")
    curve_imgs = [(k, _curve_figure(k, infos)) for k in CURVE_KEYS]
    curve_imgs = [(k, c) for k, c in curve_imgs if c]
    hist_imgs = [(g, _history_figure(g, infos)) for g in HISTORY_GROUPS]
    hist_imgs = [(g, c) for g, c in hist_imgs if c]
    if hist_imgs:
        parts.append("<h2>Training curves</h2>")
        for g, c in hist_imgs:
            parts.append(f"<figure><img class='figure' alt='{g}' src='{c}'><figcaption>{html.escape(HISTORY_GROUPS[g][0])}</figcaption></figure>")
    if curve_imgs:
        parts.append("<h2>Curves</h2>")
        for k, c in curve_imgs:
            parts.append(f"<figure><img class='figure' alt='{k}' src='{c}'><figcaption>{html.escape(CURVE_KEYS[k][2])}</figcaption></figure>")
    stems = _figure_order(infos)
    if stems:
        parts.append("<h2>Pictures</h2>")
    for stem in stems:
        parts.append(f"<h3>{html.escape(stem)}</h3>")
        if stem in FIGURE_HELP:
            parts.append(f"<p class='help'>{html.escape(FIGURE_HELP[stem])}</p>")
        parts.append("<div class='row'>")
        for i in infos:
            for f in i["figures"]:
                if f.stem == stem:
                    parts.append(f"<figure><img class='figure' alt='{html.escape(i['name'] + ': ' + f.stem)}' src='{_png_b64(f.read_bytes())}'>"
                                 f"<figcaption>{html.escape(i['name'])}</figcaption></figure>")
        parts.append("</div>")
    parts.append("<h2>Provenance</h2>")
    for i in infos:
        parts.append(f"<details><summary>{html.escape(i['name'])}</summary><pre>{html.escape(json.dumps(i['provenance'] or {'config': i['config'], 'environment': i['environment']}, indent=1, default=str))}</pre></details>")
    # a self-check a browser (or a test) can read: how many figures decoded
    # (data-broken lists the alt texts of figures that did not decode, separated by '|')
    parts.append(FIGURE_STATUS)
    parts.append("</body></html>")
    p = Path(path)
    atomic_write_text(p, "\n".join(parts))
    return p
