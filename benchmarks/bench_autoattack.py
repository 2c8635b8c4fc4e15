"""robrep's AutoAttack protocols vs the reference implementation (pyautoattack), side by side.

For each model (trained here, adversarially, cached in --cache; or --checkpoint): the same first
--n test images, the reference's ``AutoAttack(version="standard", seed=0).run_standard_evaluation``
and robrep's ``autoattack-standard`` (fp32 and ``--precision auto``) and ``fast`` protocols, run
one after the other in this process, each on one batch of all images (so the reference and robrep
draw the same random numbers). Prints the robust accuracy after every stage, the times and their
ratios (wall and process CPU seconds; with one thread the CPU seconds are the better measure on
a shared machine), and robrep's time over the floor of its own passes, per stage:

- ``floor``: example-passes x the time of one pass per example (forward+backward and forward
  only, each timed at the batch size most passes run at: the points left after APGD-CE; timed
  before and after the other runs, the mean);
- ``call floor``: the same passes at the batch sizes they ran at: model calls x the fixed cost of
  one call + example-passes x the cost per example (both fitted to timed calls at 3 batch sizes);
- ``replay floor`` (``--replay``): every model call of the run replayed alone, in order, at the
  batch size it ran at, and timed: what the passes cost with no attack code around them (no
  fitted rate; the same batch sizes, so the same cache behaviour).

    python benchmarks/bench_autoattack.py --n 200 --json docs/benchmarks/autoattack.json
    python benchmarks/bench_autoattack.py --checkpoint runs/mnist/model.safetensors --dataset mnist --eps 0.3 --n 200
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

import robrep
from robrep.attacks import PassCounter, run_protocol

_DEVICE = torch.device("cpu")


def _clock() -> float:
    """The time the benchmark compares: process CPU seconds on a CPU (one thread: close to what an
    idle machine measures, even on a shared one); on a GPU, wall seconds after a synchronize (the
    ``cpu_s`` fields then hold these)."""
    if _DEVICE.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


CASES = {"mnist": ("mnist", "linf", 0.3), "fashion-mnist": ("fashion-mnist", "linf", 0.1)}


def tiny_cnn() -> nn.Module:
    """conv8 (stride 2) - conv16 (stride 2) - fc10 with ELU on 28x28 grey images (inputs in [0,1]); the
    ReLU version, adversarially trained this briefly at eps 0.3, has zero input gradients on its
    robust points (the zero-gradients flag)."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ELU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                         nn.ELU(), nn.Flatten(), nn.Linear(16 * 7 * 7, 10))


def train(dataset: str, eps: float, steps: int, cache: Path) -> nn.Module:
    """PGD-2 adversarial training (linf ``eps``), Adam, batches of 64; cached as safetensors."""
    from safetensors.torch import load_file, save_file

    path = cache / f"{dataset}-elu-eps{eps:g}-steps{steps}.safetensors"
    model = tiny_cnn()
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        return model.eval()
    torch.manual_seed(0)
    x, y = robrep.load_dataset(dataset, "train").tensors()
    x = x.float() / 255 if not x.is_floating_point() else x
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    thr = robrep.threat("linf", eps)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        i = torch.randint(0, len(x), (64,), generator=g)
        xa = robrep.attacks.pgd_perturb(model.eval(), x[i], y[i], thr, steps=2, step_size=1.25 * eps, generator=g)
        loss = nn.functional.cross_entropy(model.train()(xa), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    cache.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(path))
    return model.eval()


class _StageLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.stages: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        m = re.match(r"robust accuracy after (\S+): ([\d.]+)%", msg)
        if m:
            self.stages[m.group(1).lower()] = float(m.group(2)) / 100
        m = re.match(r"initial accuracy: ([\d.]+)%", msg)
        if m:
            self.stages["clean"] = float(m.group(1)) / 100


def run_reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float) -> tuple[dict[str, float], float]:
    from pyautoattack import AutoAttack

    handler = _StageLog()
    log = logging.getLogger("auto-attack")
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    try:
        aa = AutoAttack(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, version="standard", seed=0, device=str(x.device))
        t = time.perf_counter()
        aa.run_standard_evaluation(x, y, batch_size=len(x))
        wall = time.perf_counter() - t
    finally:
        log.removeHandler(handler)
    return handler.stages, wall


class CallLog(nn.Module):
    """The model, counting its calls per stage: (stage, "grad" | "forward") -> [calls, examples],
    and keeping the sequence of calls (stage, kind, batch size) for :func:`replay_floor`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.stage = "checks"
        self.calls: dict[tuple[str, str], list[int]] = {}
        self.seq: list[tuple[str, str, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kind = "grad" if torch.is_grad_enabled() and x.requires_grad else "forward"
        c = self.calls.setdefault((self.stage, kind), [0, 0])
        c[0] += 1
        c[1] += x.shape[0]
        self.seq.append((self.stage, kind, int(x.shape[0])))
        return self.model(x)


def replay_floor(model: nn.Module, x: torch.Tensor, seq: list[tuple[str, str, int]]) -> dict[str, float]:
    """CPU seconds per stage of the protocol's own model calls replayed alone: every call of the
    run, in order, at the batch size it ran at (``grad``: forward + backward to the input;
    ``forward``: forward only), on the first images of ``x`` (tiled where a call saw more). What
    the run's passes cost with no attack code around them: the floor it is compared with."""
    per: dict[str, float] = {}
    for stage, kind, n in seq:
        xb = x[:n] if n <= len(x) else x.repeat((n + len(x) - 1) // len(x), 1, 1, 1)[:n]
        t = _clock()
        if kind == "grad":
            xr = xb.detach().clone().requires_grad_(True)
            torch.autograd.grad(model(xr).sum(), xr)
        else:
            with torch.no_grad():
                model(xb)
        per[stage] = per.get(stage, 0.0) + _clock() - t
    return per


@contextmanager
def stage_timers(log: CallLog | None, counter: PassCounter):  # type: ignore[no-untyped-def]
    """Wrap every stage attack of the protocols: per stage wall and CPU seconds and passes."""
    from robrep.attacks import protocols

    out: dict[str, dict[str, float]] = {}
    saved = dict(protocols.STAGE_ATTACKS)

    def timed(name: str, fn):  # type: ignore[no-untyped-def]
        def run(*a, **kw):  # type: ignore[no-untyped-def]
            if log is not None:
                log.stage = name
            g0, f0 = counter.grad, counter.forward
            w, c = time.perf_counter(), _clock()
            try:
                return fn(*a, **kw)
            finally:
                d = out.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "grad": 0, "forward": 0})
                d["wall_s"] += time.perf_counter() - w
                d["cpu_s"] += _clock() - c
                d["grad"] += counter.grad - g0
                d["forward"] += counter.forward - f0
                if log is not None:
                    log.stage = "checks"

        return run

    for name, fn in saved.items():
        protocols.STAGE_ATTACKS[name] = timed(name, fn)
    try:
        yield out
    finally:
        protocols.STAGE_ATTACKS.clear()
        protocols.STAGE_ATTACKS.update(saved)


def run_robrep(protocol: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float,
               precision: str = "fp32") -> dict:
    """One protocol on the correctly classified points: stages, times, passes (fp32: per stage)."""
    counter = PassCounter()
    log = CallLog(model) if precision == "fp32" else None
    net = log if log is not None else model
    w, c = time.perf_counter(), _clock()
    with stage_timers(log, counter) as per_stage:
        with torch.no_grad():
            ok = model(x).argmax(1) == y
        idx = torch.nonzero(ok).flatten()
        if precision == "fp32":
            r = run_protocol(protocol, net, x[idx], y[idx], robrep.threat(norm, eps), seed=0, counter=counter)
        else:
            r = robrep.create_attack(protocol, precision=precision)(net, x[idx], y[idx], robrep.threat(norm, eps), seed=0,
                                                                     counter=counter)
    wall, cpu = time.perf_counter() - w, _clock() - c
    counter.forward += len(x)
    n = len(x)
    stages = {"clean": float(ok.float().mean())}
    for name, broke in getattr(r, "stages", ()):
        stages[name] = float(ok.sum() - broke.sum()) / n
    stages["final"] = float(ok.sum() - r.success.sum()) / n
    return {"stages": stages, "wall_s": wall, "cpu_s": cpu, "passes": dict(getattr(r, "passes", {})) | vars(counter),
            "precision_ran": getattr(r, "precision", precision), "per_stage": per_stage,
            "calls": {f"{s}/{k}": v for (s, k), v in (log.calls.items() if log else [])},
            "call_seq": log.seq if log else []}


def _timed(fn, budget: float = 0.4) -> float:  # type: ignore[no-untyped-def]
    """CPU seconds of one call of ``fn``: the mean over back-to-back calls filling ``budget`` s
    (a sustained rate; a few calls time bursts of a shared CPU, not the rate an attack sees)."""
    fn()
    reps, t = 0, _clock()
    while True:
        fn()
        reps += 1
        el = _clock() - t
        if el >= budget and reps >= 5:
            return el / reps


def pass_costs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[float, float, float]]:
    """Per kind (``grad``: forward+backward of the input gradient; ``forward``): ``(seconds per call,
    seconds per example, seconds per example at the full batch)`` fitted by least squares to timed calls at 3 batch sizes
    up to len(x)."""
    sizes = sorted({max(1, len(x) // 16), max(1, len(x) // 4), len(x)})
    out = {}
    for kind in ("grad", "forward"):
        ts = []
        for b in sizes:
            xb = x[:b].clone()
            if kind == "grad":
                xr = xb.requires_grad_(True)
                ts.append(_timed(lambda xr=xr: torch.autograd.grad(model(xr).sum(), xr)))
            else:
                with torch.no_grad():
                    ts.append(_timed(lambda xb=xb: model(xb)))
        bs = torch.tensor(sizes, dtype=torch.float64)
        tt = torch.tensor(ts, dtype=torch.float64)
        a = torch.stack([torch.ones_like(bs), bs], 1)
        per_call, per_ex = torch.linalg.lstsq(a, tt[:, None]).solution.flatten().tolist()
        if per_call < 0 or per_ex <= 0:  # noise: fall back to the largest batch's rate
            per_call, per_ex = 0.0, ts[-1] / sizes[-1]
        out[kind] = (per_call, per_ex, ts[-1] / sizes[-1])
    return out


def floors(res: dict, costs: dict[str, tuple[float, float, float]]) -> dict[str, dict[str, float]]:
    """Per stage (and in total): CPU seconds over the floor and over the call floor."""
    rows: dict[str, dict[str, float]] = {}
    tot = {"cpu_s": 0.0, "floor": 0.0, "call_floor": 0.0}
    for name, d in res["per_stage"].items():
        calls = {k: res["calls"].get(f"{name}/{k}", [0, 0])[0] for k in ("grad", "forward")}
        fl = sum(d[k] * costs[k][2] for k in ("grad", "forward"))
        cf = sum(calls[k] * costs[k][0] + d[k] * costs[k][1] for k in ("grad", "forward"))
        rows[name] = {"cpu_s": d["cpu_s"], "floor_s": fl, "call_floor_s": cf, "over_floor": d["cpu_s"] / max(fl, 1e-12),
                      "over_call_floor": d["cpu_s"] / max(cf, 1e-12), "grad": d["grad"], "forward": d["forward"],
                      "grad_calls": calls["grad"], "forward_calls": calls["forward"]}
        tot["floor"] += fl
        tot["call_floor"] += cf
    staged = sum(d["grad"] for d in res["per_stage"].values()), sum(d["forward"] for d in res["per_stage"].values())
    rest = {"grad": res["passes"]["grad"] - staged[0], "forward": res["passes"]["forward"] - staged[1]}
    calls = {k: res["calls"].get(f"checks/{k}", [0, 0])[0] for k in ("grad", "forward")}
    tot["floor"] += sum(rest[k] * costs[k][2] for k in rest)
    tot["call_floor"] += sum(calls[k] * costs[k][0] + rest[k] * costs[k][1] for k in rest)
    rows["total"] = {"cpu_s": res["cpu_s"], "floor_s": tot["floor"], "call_floor_s": tot["call_floor"],
                     "over_floor": res["cpu_s"] / max(tot["floor"], 1e-12), "over_call_floor": res["cpu_s"] / max(tot["call_floor"], 1e-12)}
    replay = res.get("replay_s") or {}
    if replay:
        for name, row in rows.items():
            rs = sum(replay.values()) if name == "total" else replay.get(name, 0.0)
            row["replay_floor_s"] = rs
            row["over_replay_floor"] = row["cpu_s"] / max(rs, 1e-12)
    return rows


def load_case(a: argparse.Namespace, key: str) -> tuple[nn.Module, str, str, float, str]:
    if a.checkpoint:
        from robrep.models import load_with_meta

        model, _ = load_with_meta(a.checkpoint, device="cpu")
        return model.eval().to(_DEVICE), a.dataset, a.norm, a.eps, a.checkpoint
    dataset, norm, eps = CASES[key]
    return train(dataset, eps, a.train_steps, Path(a.cache)).to(_DEVICE), dataset, norm, eps, f"{dataset} tiny CNN, PGD-2 trained {a.train_steps} steps"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="test images per model (default: %(default)s)")
    ap.add_argument("--models", default="mnist,fashion-mnist", help="(default: %(default)s)")
    ap.add_argument("--checkpoint", default=None, help="measure this model instead of --models (default: %(default)s)")
    ap.add_argument("--dataset", default="mnist", help="--checkpoint's test set (default: %(default)s)")
    ap.add_argument("--norm", default="linf", choices=("linf", "l2"), help="--checkpoint's norm (default: %(default)s)")
    ap.add_argument("--eps", type=float, default=0.3, help="--checkpoint's eps (default: %(default)s)")
    ap.add_argument("--train-steps", type=int, default=300, help="(default: %(default)s)")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/robrep/bench-autoattack"), help="(default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    ap.add_argument("--skip-reference", action="store_true", help="robrep only (pass floors) (default: %(default)s)")
    ap.add_argument("--skip-auto", action="store_true", help="no --precision auto row (default: %(default)s)")
    ap.add_argument("--replay", action="store_true",
                    help="also time the replay floor: every model call of the fp32 runs replayed alone, in order, at "
                         "its batch size (doubles the time of those runs) (default: %(default)s)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s); on cuda the CPU-second "
                    "fields hold wall seconds after a synchronize")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    global _DEVICE
    _DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    rows = []
    for key in ([args.checkpoint] if args.checkpoint else args.models.split(",")):
        model, dataset, norm, eps, desc = load_case(args, key)
        for p in model.parameters():
            p.requires_grad_(False)
        x, y = next(iter(robrep.load_dataset(dataset, "test").head(args.n).batches(args.n)))
        x, y = x.to(_DEVICE), y.to(_DEVICE)
        ref = None
        if not args.skip_reference:
            w, c = time.perf_counter(), _clock()
            ref_stages, _ = run_reference(model, x, y, norm, eps)
            ref = {"stages": ref_stages, "wall_s": time.perf_counter() - w, "cpu_s": _clock() - c}
        std = run_robrep("autoattack-standard", model, x, y, norm, eps)
        # pass costs at the batch size most passes run at (the points left after APGD-CE), timed
        # before and after the other runs: on a shared machine they drift; the floors use the mean
        b = max(4, round(std["stages"]["apgd-ce"] * len(x)))
        costs_before = pass_costs(model, x[:b])
        auto = None if args.skip_auto else run_robrep("autoattack-standard", model, x, y, norm, eps, precision="auto")
        fast = run_robrep("fast", model, x, y, norm, eps)
        if args.replay:
            for r in (std, fast):
                r["replay_s"] = replay_floor(model, x, r["call_seq"])
        costs_after = pass_costs(model, x[:b])
        costs = {k: tuple((u + v) / 2 for u, v in zip(costs_before[k], costs_after[k])) for k in costs_before}
        row = {"model": desc, "norm": norm, "eps": eps, "n": args.n, "reference": ref, "robrep_standard": std,
               "robrep_standard_auto": auto, "robrep_fast": fast, "pass_costs": costs,
               "pass_costs_before_after": [costs_before, costs_after],
               "standard_floors": floors(std, costs), "fast_floors": floors(fast, costs)}
        rows.append(row)
        report(row)
    gpu = f", {torch.cuda.get_device_name(_DEVICE)}" if _DEVICE.type == "cuda" else ""
    meta = {"machine": f"{os.cpu_count()}-core CPU{gpu}, torch {torch.__version__}, python {platform.python_version()}",
            "threads": args.threads, "date": time.strftime("%Y-%m-%d"), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(meta, indent=1))
    return 0


def report(row: dict) -> None:
    """Print one model's results as plain lines."""
    print(f"\n== {row['model']}, {row['norm']} {row['eps']:g}, {row['n']} images")
    runs = [("reference standard", row["reference"]), ("robrep standard fp32", row["robrep_standard"]),
            ("robrep standard --precision auto", row["robrep_standard_auto"]), ("robrep fast", row["robrep_fast"])]
    ref = row["reference"]
    for name, r in runs:
        if r is None:
            continue
        st = " / ".join(f"{k} {100 * v:.1f}" for k, v in r["stages"].items())
        line = f"{name:34s} {st}  | wall {r['wall_s']:.1f} s, cpu {r['cpu_s']:.1f} s"
        if ref is not None and r is not ref:
            gap = 100 * (r["stages"].get("final", r["stages"].get("square", 0)) - ref["stages"].get("square", 0))
            line += f"  | vs reference: {ref['wall_s'] / r['wall_s']:.2f}x wall, {ref['cpu_s'] / r['cpu_s']:.2f}x cpu, " \
                    f"robust accuracy {gap:+.1f} points"
        print(line)
    for proto in ("standard", "fast"):
        for stage, f in row[f"{proto}_floors"].items():
            line = (f"  {proto:8s} {stage:8s} cpu {f['cpu_s']:7.2f} s  floor {f['floor_s']:7.2f} s ({f['over_floor']:.2f}x)"
                    f"  call floor {f['call_floor_s']:7.2f} s ({f['over_call_floor']:.2f}x)")
            if "replay_floor_s" in f:
                line += f"  replay floor {f['replay_floor_s']:7.2f} s ({f['over_replay_floor']:.2f}x)"
            print(line)
    for kind in ("grad", "forward"):
        before, after = (c[kind][2] * 1e6 for c in row["pass_costs_before_after"])
        print(f"  one {kind} pass per example at the measured batch: {before:.1f} us before, {after:.1f} us after the runs"
              f" (call floor fit: {row['pass_costs'][kind][0] * 1e6:.0f} us per call + {row['pass_costs'][kind][1] * 1e6:.1f} us"
              " per example)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
