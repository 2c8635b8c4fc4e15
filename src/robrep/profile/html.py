"""Self-contained HTML pages of robustness cards: one card (``card.html``) and the compare
leaderboard (sortable table, overlaid curves, pictures side by side). Figures are data URIs; the
``#figure-status`` element reports how many decoded (for browser checks)."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_write_text
from ..report.html import FIGURE_STATUS
from .card import HEADLINE_HELP, Card

__all__ = ["curve_png", "write_card_html", "write_compare_html", "HEADLINE_ORDER", "format_headline"]

HEADLINE_ORDER = ("probe_natural_accuracy", "probe_adversarial_accuracy", "synbench_score", "synbench_robust_score",
                  "vulnerability", "mi_clean", "mi_worst", "accuracy_bound", "sensitivity_median", "sensitivity_mean",
                  "sensitivity_random_median", "smoothed_accuracy", "certified_accuracy")

STYLE = ("<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#eee}"
         "th.sort{cursor:pointer}th.sort:after{content:' \\2195';color:#888}"
         "img{max-width:100%;border:1px solid #ddd;margin:4px}figure{display:inline-block;margin:8px;vertical-align:top}"
         "figcaption{font-size:0.85em;color:#444;max-width:520px}.help{font-size:0.85em;color:#555;text-align:left}"
         ".note{color:#333;max-width:1000px}.row{display:flex;align-items:flex-start}"
         ".row figure{flex:1 1 0;min-width:0;margin:4px}.row img{width:100%;image-rendering:pixelated}"
         ".ival{color:#666;font-size:0.85em}</style>")

SORT_SCRIPT = ("<script>function sortTable(col){var t=document.getElementById('leaderboard');var b=t.tBodies[0];"
               "var rows=Array.prototype.slice.call(b.rows);var dir=t.dataset.col==String(col)&&t.dataset.dir=='desc'?'asc':'desc';"
               "rows.sort(function(a,c){var x=parseFloat(a.cells[col].dataset.value),y=parseFloat(c.cells[col].dataset.value);"
               "if(isNaN(x)){x=-Infinity;}if(isNaN(y)){y=-Infinity;}return dir=='desc'?y-x:x-y;});"
               "for(var i=0;i<rows.length;i++){b.appendChild(rows[i]);}t.dataset.col=String(col);t.dataset.dir=dir;}</script>")


def _b64(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def curve_png(curves: Sequence[tuple[str, dict[str, Any]]]) -> bytes | None:
    """One plot of the curves ``[(prefix, curve dict of a card)]``: every series, labelled
    ``prefix: series`` (prefix empty on a single card; one colour per card, one line style per
    series); reference series drawn once, dashed black; bands (intervals) shaded; errors as
    error bars. The sample sizes go into the caption beside the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [(p, c) for p, c in curves if c and c.get("series")]
    if not curves:
        return None
    first = curves[0][1]
    fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=100)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", ":", "-.", (0, (5, 1))]
    drawn_refs: set[str] = set()
    for i, (prefix, c) in enumerate(curves):
        refs = set(c.get("reference") or [])
        own = [k for k in c["series"] if k not in refs]
        for label, pts in c["series"].items():
            if not pts:
                continue
            if label in refs:
                if label in drawn_refs:
                    continue
                drawn_refs.add(label)
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            cat = isinstance(xs[0], str)
            xv = list(range(len(xs))) if cat else xs
            lab = label if (label in refs or not prefix) else (prefix if len(own) == 1 else f"{prefix}: {label}")
            col = colors[(i if len(curves) > 1 else own.index(label) if label in own else 0) % len(colors)]
            ls = styles[own.index(label) % len(styles)] if (label in own and len(curves) > 1) else "-"
            style: dict[str, Any] = {"color": "black", "ls": "--", "lw": 1.0} if label in refs else {"color": col, "ls": ls}
            err = (c.get("errors") or {}).get(label)
            if err:
                lo = [y - e[0] for y, e in zip(ys, err)]
                hi = [e[1] - y for y, e in zip(ys, err)]
                ax.errorbar([v + 0.06 * i for v in xv], ys, yerr=[lo, hi], marker="o", capsize=3, label=lab,
                            color=style["color"], ls="-" if len(xs) > 1 else "none")
            else:
                ax.plot(xv, ys, marker="o" if len(xs) <= 25 else None, ms=3, label=lab, **style)
            band = (c.get("band") or {}).get(label)
            if band:
                ax.fill_between([p[0] for p in band], [p[1] for p in band], [p[2] for p in band], alpha=0.12, color=style["color"])
            if cat:
                ax.set_xticks(xv, xs, rotation=20, fontsize=7)
    ax.set_xlabel(first.get("x", ""))
    ax.set_ylabel(first.get("y", ""))
    ax.set_title(first.get("title", ""), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6 if len(curves) > 2 else 7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def format_headline(h: dict[str, Any] | None) -> tuple[str, str]:
    """(value text, interval / sample-size text) of one headline entry."""
    if not h or h.get("value") is None:
        return "", ""
    v = h["value"]
    txt = f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))
    extra = []
    if "low" in h and h["low"] is not None:
        extra.append(f"[{h['low']:.4f}, {h['high']:.4f}]")
    if "n" in h:
        extra.append(f"n={h['n']}")
    return txt, " ".join(extra)


def _page(title: str, body: list[str]) -> str:
    return "\n".join([f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{STYLE}</head><body>",
                      *body, FIGURE_STATUS, "</body></html>"])


def _card_notes(card: Card) -> list[str]:
    b, t, m, d = card.budget, card.threat, card.model, card.dataset
    notes = [f"Encoder {card.source} ({m.get('arch')}, {m.get('parameters', 0):,} parameters, input {tuple(m.get('input_shape', []))}, "
             f"{m.get('feature_dim')}-d representation at layer {card.layers[0]}). Weights: {m.get('weights')}.",
             f"Data: {d['name']} ({d['train_n']} training images for the probe, {d['test_n']} test images)"
             + (f"; images adapted to the model: {d['adapted']}." if d.get("adapted") else "."),
             f"Threat model: {t.get('norm')} eps = {t.get('eps'):g}. Budget: {b.get('name')} (every sample size below). Seed {card.seed}."]
    if m.get("random_init"):
        notes.append("This encoder has random weights: its numbers are a reference point, not those of a trained model.")
    return notes


def write_card_html(card: Card, folder: str | Path) -> Path:
    """``folder/card.html``: the card's headline table (with intervals and sample sizes), curves,
    pictures (PNG files in ``folder``, embedded) and the budget."""
    folder = Path(folder)
    body = [f"<h1>Robustness card: {html.escape(card.name)}</h1>"]
    body += [f"<p class='note'>{html.escape(n)}</p>" for n in _card_notes(card)]
    body.append("<h2>Numbers</h2><table id='headline'><tr><th>metric</th><th>value</th><th>interval / sample size</th><th>meaning</th></tr>")
    for k in HEADLINE_ORDER:
        if k not in card.headline:
            continue
        v, extra = format_headline(card.headline[k])
        body.append(f"<tr><td style='text-align:left'>{k}</td><td data-key='{k}'>{v}</td><td class='ival'>{html.escape(extra)}</td>"
                    f"<td class='help'>{html.escape(HEADLINE_HELP.get(k, ''))}</td></tr>")
    body.append("</table>")
    body.append("<h2>Curves</h2>")
    for key, c in card.curves.items():
        png = curve_png([("", c)])
        if png:
            body.append(f"<figure><img class='figure' alt='{html.escape(key)}' src='{_b64(png)}'>"
                        f"<figcaption>{html.escape(c.get('title', key))}: {html.escape(c.get('n', ''))}</figcaption></figure>")
    if card.figures:
        body.append("<h2>Pictures</h2>")
        for stem, f in card.figures.items():
            p = folder / f["file"]
            if p.is_file():
                body.append(f"<figure><img class='figure' alt='{html.escape(stem)}' src='{_b64(p.read_bytes())}'>"
                            f"<figcaption>{html.escape(f.get('caption', stem))}</figcaption></figure>")
    body.append("<h2>Budget and provenance</h2><details><summary>budget, seconds per stage, environment</summary><pre>"
                + html.escape(json.dumps({"budget": card.budget, "seconds": card.seconds, "environment": card.environment}, indent=1, default=str))
                + "</pre></details>")
    path = folder / "card.html"
    atomic_write_text(path, _page(f"robustness card: {card.name}", body))
    return path


def write_compare_html(cards: Sequence[Card], folders: Sequence[Path], path: str | Path, *, title: str = "robrep compare") -> Path:
    """The leaderboard page: a sortable table of the headline numbers (click a column), the
    curves of every card overlaid, and each card's pictures side by side."""
    c0 = cards[0]
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p class='note'>{len(cards)} encoders on {html.escape(c0.dataset['name'])}, threat {html.escape(str(c0.threat.get('norm')))} "
            f"eps = {c0.threat.get('eps'):g}, budgets: {html.escape(', '.join(sorted({c.budget.get('name', '') for c in cards})))}. "
            f"Click a column header to sort. Cells show the value; the line below, its 95 % interval and sample size.</p>"]
    keys = [k for k in HEADLINE_ORDER if any(k in c.headline for c in cards)]
    body.append("<table id='leaderboard'><thead><tr><th>encoder</th><th>weights</th>"
                + "".join(f"<th class='sort' title='{html.escape(HEADLINE_HELP.get(k, ''))}' onclick='sortTable({i + 2})'>{k}</th>"
                          for i, k in enumerate(keys)) + "</tr></thead><tbody>")
    for c in cards:
        w = "random init" if c.model.get("random_init") else html.escape(str(c.model.get("weights", ""))[-40:])
        cells = []
        for k in keys:
            v, extra = format_headline(c.headline.get(k))
            val = c.value(k)
            dv = f"{val:.10g}" if isinstance(val, (int, float)) else "nan"
            cells.append(f"<td data-key='{k}' data-value='{dv}'>{v}<br><span class='ival'>{html.escape(extra)}</span></td>")
        body.append(f"<tr><td style='text-align:left'>{html.escape(c.name)}</td><td class='help'>{w}</td>{''.join(cells)}</tr>")
    body.append("</tbody></table>")
    body.append("<h2>Curves</h2>")
    ckeys: list[str] = []
    for c in cards:
        ckeys += [k for k in c.curves if k not in ckeys]
    for k in ckeys:
        png = curve_png([(c.name, c.curves.get(k, {})) for c in cards])
        if png:
            t = next(c.curves[k].get("title", k) for c in cards if k in c.curves)
            sizes = "; ".join(f"{c.name}: {c.curves[k].get('n', '')}" for c in cards if k in c.curves)
            body.append(f"<figure><img class='figure' alt='{html.escape(k)}' src='{_b64(png)}'><figcaption>{html.escape(t)}. "
                        f"{html.escape(sizes)}</figcaption></figure>")
    stems: list[str] = []
    for c in cards:
        stems += [s for s in c.figures if s not in stems]
    if stems:
        body.append("<h2>Pictures</h2>")
    for s in stems:
        body.append(f"<h3>{html.escape(s)}</h3><div class='row'>")
        for c, f in zip(cards, folders):
            fig = c.figures.get(s)
            if fig and (Path(f) / fig["file"]).is_file():
                body.append(f"<figure><img class='figure' alt='{html.escape(c.name + ': ' + s)}' "
                            f"src='{_b64((Path(f) / fig['file']).read_bytes())}'><figcaption>{html.escape(c.name)} "
                            f"(n = {fig.get('n', '?')})</figcaption></figure>")
        body.append("</div>")
    body.append(SORT_SCRIPT)
    p = Path(path)
    atomic_write_text(p, _page(title, body))
    return p
