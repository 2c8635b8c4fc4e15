"""``robrep compare CARD...``: one leaderboard of robustness cards (HTML, JSON, CSV)."""

from __future__ import annotations

import argparse

from .common import emit


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from ..profile.html import HEADLINE_ORDER

    p = sub.add_parser("compare", help="rank the robustness cards of several encoders: sortable table, overlaid curves, "
                                       "pictures side by side, JSON and CSV")
    p.add_argument("cards", nargs="+", help="card.json files (or their folders) written by robrep profile")
    p.add_argument("--out", default="compare", help="folder of compare.html, compare.json, compare.csv (default: %(default)s)")
    p.add_argument("--rank-by", default="probe_adversarial_accuracy", choices=list(HEADLINE_ORDER),
                   help="headline metric ranking the rows, descending (default: %(default)s)")
    p.add_argument("--title", default="robrep compare", help="page title (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout (default: off)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..profile import compare_cards

    res = compare_cards(args.cards, args.out, rank_by=args.rank_by, title=args.title)
    lines = [f"{'rank':<5}{'encoder':<36}{args.rank_by}"]
    for r in res.rows:
        v = r.get(args.rank_by)
        lines.append(f"{r['rank']:<5}{str(r['encoder'])[:35]:<36}{v:.4f}" if isinstance(v, float) else f"{r['rank']:<5}{r['encoder']}")
    lines.append(f"page: {res.html}  table: {res.csv}, {res.json}")
    emit({"html": str(res.html), "json": str(res.json), "csv": str(res.csv), "rows": res.rows}, args.json, "\n".join(lines))
    return 0
