"""One self-contained HTML report for one or more run folders (figures embedded, no network).

A run folder holds ``record.json`` (or ``metrics.json``), optional ``*.json`` results of other
measurements, and ``*.png`` figures; the report shows a comparison table of scalar metrics,
curves drawn from known keys, and every PNG.
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

__all__ = ["write_report", "collect_run", "CURVE_KEYS"]

# metrics key -> (x label, y label, title) for curves stored as [[x, y], ...]
CURVE_KEYS: dict[str, tuple[str, str, str]] = {
    "robust_accuracy_vs_eps": ("eps", "robust accuracy", "Robust accuracy vs eps"),
    "certified_accuracy_vs_radius": ("radius", "certified accuracy", "Certified accuracy vs radius"),
    "vulnerability_per_layer": ("layer", "vulnerability (nats)", "Representation vulnerability per layer"),
    "synbench_curve": ("threshold accuracy", "expected bound", "SynBench expected-bound curve"),
}


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
    curves = {k: v for k, v in metrics.items() if k in CURVE_KEYS and isinstance(v, list)}
    figs = sorted(run.glob("*.png"))
    return {"name": run.name, "path": str(run), "scalars": scalars, "curves": curves, "figures": figs,
            "config": rec.get("config"), "environment": rec.get("environment")}


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
        ax.plot(range(len(xs)) if isinstance(xs[0], str) else xs, ys, marker="o", label=r["name"])
        if isinstance(xs[0], str):
            ax.set_xticks(range(len(xs)), xs, rotation=30, fontsize=7)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
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


def write_report(runs: Sequence[str | os.PathLike[str]], path: str | os.PathLike[str], *, title: str = "robrep report") -> Path:
    """Write ``path`` (HTML) comparing ``runs``; returns the path."""
    infos = [collect_run(Path(r)) for r in runs]
    keys: list[str] = []
    for i in infos:
        keys += [k for k in i["scalars"] if k not in keys]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#eee}"
             "img{max-width:100%;border:1px solid #ddd;margin:4px}figure{display:inline-block;margin:8px}"
             "figcaption{font-size:0.85em;color:#444}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>", "<h2>Comparison</h2><table id='comparison'><tr><th>metric</th>"]
    parts += [f"<th>{html.escape(i['name'])}</th>" for i in infos]
    parts.append("</tr>")
    for k in keys:
        parts.append(f"<tr><td style='text-align:left'>{html.escape(k)}</td>" + "".join(f"<td data-key='{html.escape(k)}'>{_fmt(i['scalars'].get(k, ''))}</td>" for i in infos) + "</tr>")
    parts.append("</table>")
    curve_imgs = [(k, _curve_figure(k, infos)) for k in CURVE_KEYS]
    curve_imgs = [(k, c) for k, c in curve_imgs if c]
    if curve_imgs:
        parts.append("<h2>Curves</h2>")
        for k, c in curve_imgs:
            parts.append(f"<figure><img class='figure' alt='{k}' src='{c}'><figcaption>{html.escape(CURVE_KEYS[k][2])}</figcaption></figure>")
    for i in infos:
        if i["figures"]:
            parts.append(f"<h2>{html.escape(i['name'])}</h2>")
            for f in i["figures"]:
                parts.append(f"<figure><img class='figure' alt='{html.escape(f.stem)}' src='{_png_b64(f.read_bytes())}'>"
                             f"<figcaption>{html.escape(f.stem)}</figcaption></figure>")
    parts.append("<h2>Provenance</h2>")
    for i in infos:
        parts.append(f"<details><summary>{html.escape(i['name'])}</summary><pre>{html.escape(json.dumps({'config': i['config'], 'environment': i['environment']}, indent=1, default=str))}</pre></details>")
    # a self-check a browser (or a test) can read: how many figures decoded
    parts.append("<p id='figure-status' data-total='0' data-loaded='0'></p><script>window.addEventListener('load',function(){"
                 "var im=document.querySelectorAll('img.figure'),n=0;for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)n++;}"
                 "var s=document.getElementById('figure-status');s.dataset.total=im.length;s.dataset.loaded=n;"
                 "s.textContent=n+' of '+im.length+' figures rendered';});</script>")
    parts.append("</body></html>")
    p = Path(path)
    atomic_write_text(p, "\n".join(parts))
    return p
