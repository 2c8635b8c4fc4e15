"""``robrep list-layers SOURCE``: the representation names of a model and their shapes."""

from __future__ import annotations

import argparse
from typing import Any

from .common import SOURCE_HELP, add_model_source, emit


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("list-layers", help="the representation layers of a model (penultimate, pooled, features, cls, "
                                           "hidden_states.<i>, logits, every module) with their output shapes")
    p.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("--input-shape", type=int, nargs=3, default=None, metavar=("C", "H", "W"),
                   help="input of the shape pass; another height/width is resized inside the model as the source "
                        "prescribes (default: the model's own input shape)")
    p.add_argument("--no-modules", action="store_true", help="list the aliases only, not every sub-module (default: off)")
    p.add_argument("--arch", default=None, help="architecture, for checkpoints that do not record it (default: %(default)s)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling of a legacy checkpoint (only for files you trust; default: off)")
    add_model_source(p)
    p.add_argument("--device", default="cpu", help="where the shape pass runs (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout (default: off)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..models import layer_shapes
    from .common import load_model_arg

    args.source = str(args.source)
    model, meta = load_model_arg(args, "source")
    shape = tuple(args.input_shape) if args.input_shape else tuple(model.input_shape)
    rows = layer_shapes(model, shape, modules=not args.no_modules)
    weights = "random init" if meta.get("pretrained") is False else (meta.get("weights") or args.source)
    result: dict[str, Any] = {"source": args.source, "arch": model.spec.arch, "weights": weights, "input_shape": list(shape),
                              "layers": [{"name": r.name, "kind": r.kind, "shape": r.shape, "help": r.help} for r in rows]}
    width = max(len(r.name) for r in rows)
    lines = [f"{args.source} ({model.spec.arch}, {weights}); shapes for one input of {'x'.join(map(str, shape))}:"]
    kind = None
    for r in rows:
        if r.kind != kind:
            kind = r.kind
            lines.append("aliases (representation names):" if kind == "alias" else "modules (their outputs):")
        shp = "x".join(map(str, r.shape)) if r.shape is not None else "-"
        lines.append(f"  {r.name:<{width}}  {shp:<16} {r.help}".rstrip())
    emit(result, args.json, "\n".join(lines))
    return 0
