"""``compare``: rank robustness cards of several encoders on one leaderboard (HTML page with a
sortable table, the curves overlaid and the pictures side by side, plus JSON and CSV tables)."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io.atomic import atomic_write_json, atomic_write_text
from .card import Card, load_card
from .html import HEADLINE_ORDER, write_compare_html

__all__ = ["CompareResult", "compare_cards", "leaderboard_rows"]


@dataclass(frozen=True)
class CompareResult:
    """The written leaderboard files and its rows (one dict per card, ranked)."""

    html: Path
    json: Path
    csv: Path
    rows: list[dict[str, Any]]


def _check_same(cards: Sequence[Card], paths: Sequence[str]) -> None:
    ds = {c.dataset.get("name") for c in cards}
    if len(ds) > 1:
        which = ", ".join(f"{p}: {c.dataset.get('name')}" for p, c in zip(paths, cards))
        raise InputError(f"the cards were measured on different datasets ({which}); compare cards of one dataset "
                         f"(re-run robrep profile with the same --dataset)")
    th = {(c.threat.get("norm"), c.threat.get("eps")) for c in cards}
    if len(th) > 1:
        which = ", ".join(f"{p}: {c.threat.get('norm')} {c.threat.get('eps')}" for p, c in zip(paths, cards))
        raise InputError(f"the cards use different threat models ({which}); re-run robrep profile with the same --norm/--eps")


def leaderboard_rows(cards: Sequence[Card], rank_by: str = "probe_adversarial_accuracy") -> list[dict[str, Any]]:
    """One flat row per card (value, low, high, n of every headline metric), ranked by
    ``rank_by`` (descending; missing values last)."""
    rows = []
    for c in cards:
        r: dict[str, Any] = {"encoder": c.name, "source": c.source, "weights": c.model.get("weights"),
                             "random_init": bool(c.model.get("random_init")), "dataset": c.dataset.get("name"),
                             "norm": c.threat.get("norm"), "eps": c.threat.get("eps"), "budget": c.budget.get("name")}
        for k in HEADLINE_ORDER:
            h = c.headline.get(k) or {}
            r[k] = h.get("value")
            r[f"{k}_low"], r[f"{k}_high"], r[f"{k}_n"] = h.get("low"), h.get("high"), h.get("n")
        rows.append(r)

    def key(r: dict[str, Any]) -> float:
        v = r.get(rank_by)
        return -v if isinstance(v, (int, float)) and math.isfinite(v) else math.inf

    rows.sort(key=key)
    for i, r in enumerate(rows):
        r["rank"] = i + 1
    return rows


def compare_cards(cards: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *, rank_by: str = "probe_adversarial_accuracy",
                  title: str = "robrep compare") -> CompareResult:
    """Read the cards (files or folders), check they share dataset and threat model, and write
    ``out/compare.html``, ``out/compare.json`` and ``out/compare.csv``. Every card is read and
    checked before anything is written.
    """
    if len(cards) < 1:
        raise InputError("give at least one card")
    if rank_by not in HEADLINE_ORDER:
        raise InputError(f"unknown --rank-by {rank_by!r}; choose one of {', '.join(HEADLINE_ORDER)}")
    paths = [str(p) for p in cards]
    loaded = [load_card(p) for p in paths]
    _check_same(loaded, paths)
    folders = [Path(p) if Path(p).is_dir() else Path(p).parent for p in paths]
    rows = leaderboard_rows(loaded, rank_by)
    order = {id(c): i for i, c in enumerate(loaded)}
    ranked = sorted(loaded, key=lambda c: next(r["rank"] for r in rows if r["encoder"] == c.name and r["source"] == c.source))
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    html_path = write_compare_html(ranked, [folders[order[id(c)]] for c in ranked], o / "compare.html", title=title)
    atomic_write_json(o / "compare.json", {"rank_by": rank_by, "cards": paths, "rows": rows})
    buf = io.StringIO()
    fields = ["rank"] + [k for k in rows[0] if k != "rank"]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    atomic_write_text(o / "compare.csv", buf.getvalue())
    return CompareResult(html_path, o / "compare.json", o / "compare.csv", rows)
