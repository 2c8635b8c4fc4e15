"""Throughput of robrep profile's forward-only measures beside the encoder-forward floor, at
224 px, for a ResNet-18 (torchvision) and a ViT-S/16-size model (timm vit_small_patch16_224),
both with random weights; and the wall time of the ``quick`` budget.

    python benchmarks/bench_profile.py                 # both encoders, 64 images, 3 rounds
    python benchmarks/bench_profile.py --n 32 --repeats 2 --skip-quick
    python benchmarks/bench_profile.py --device cuda --n 1024

Forward-only measures timed (each in images/s, rounds interleaved with the floor, medians):

* ``features``: :class:`robrep.profile.FeatureCache.features` on a cache miss (data fingerprint,
  the representation up to the penultimate layer under ``torch.inference_mode`` at the automatic
  batch size) -- what the probe, the natural accuracy and the sensitivity baseline use; the
  cache's one-time setup per profile run (weights digest, batch-size probe) is printed apart;
* ``synbench-forward``: SynBench's feature pass over the same number of synthetic images;
* ``floor``: the bare network forward (``net(normalized x)``) at the same batch size under
  ``inference_mode``.

The ratio measure / floor must be >= 0.9. Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

from robrep.models import create_model, representation  # noqa: E402
from robrep.profile import FeatureCache  # noqa: E402

ENCODERS = {"resnet18": "tv:resnet18", "vit-s16": "timm:vit_small_patch16_224"}


def bench_encoder(name: str, arch: str, n: int, repeats: int, dev: torch.device, cap: int) -> dict:
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, input_shape=(3, 224, 224)).to(dev).eval()
    x = torch.rand(n, 3, 224, 224, device=dev)
    bs = FeatureCache(memory_cap=cap).batch_size(model, "penultimate")
    rep = representation(model, "penultimate")

    def floor() -> None:
        with torch.inference_mode():
            for i in range(0, n, bs):
                model.net(model.normalize(x[i : i + bs]))

    cache = FeatureCache(memory_cap=cap)
    t0 = time.perf_counter()
    cache.batch_size(model, "penultimate")  # one-time per profile run: model digest + batch-size probe
    cache._model_key(model)
    setup_s = time.perf_counter() - t0

    def features() -> None:  # a miss every round (the store is emptied): fingerprint + forward pass
        cache._store.clear()
        cache.features(model, "penultimate", x)

    def synbench_forward() -> None:  # synbench's inner loop: Gaussian images, the representation, to CPU float64
        from robrep.data.synthetic import gaussian_mixture

        u = torch.ones(3 * 224 * 224) / (3 * 224 * 224) ** 0.5
        xs, _ = gaussian_mixture(n, 1.0 * u, center=0.5, generator=torch.Generator().manual_seed(0))
        xs = xs.view(n, 3, 224, 224)
        for i in range(0, n, bs):
            with torch.inference_mode():
                h = rep(xs[i : i + bs].to(dev))
            h.reshape(h.shape[0], -1).to("cpu", torch.float64)

    floor()  # warm-up
    times = C.interleaved({"floor": floor, "features": features, "synbench-forward": synbench_forward}, repeats, dev)
    med = {k: statistics.median(v) for k, v in times.items()}
    ips = {k: n / v for k, v in med.items()}
    return {"encoder": name, "arch": arch, "n": n, "batch_size": bs, "images_per_s": ips, "setup_seconds": setup_s,
            "ratio_features": ips["features"] / ips["floor"], "ratio_synbench_forward": ips["synbench-forward"] / ips["floor"]}


def quick_budget_time(dev: torch.device) -> dict:
    from robrep.profile import profile
    from robrep.threats import threat

    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        r = profile("init:small-cnn", "demo", out=d, budget="quick", threat=threat("linf", 0.1), device=str(dev))
        return {"source": "init:small-cnn", "dataset": "demo (28x28)", "seconds": time.perf_counter() - t, "stages": r.card.seconds}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=64, help="images per measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--memory-cap", type=float, default=1024, help="MiB (automatic batch size)")
    p.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    p.add_argument("--skip-quick", action="store_true", help="skip the timing of the quick budget")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    info = C.machine_info(dev)
    C.print_machine(info)
    rows = [bench_encoder(k, ENCODERS[k], a.n, a.repeats, dev, int(a.memory_cap * 2**20)) for k in a.encoders]
    print(f"{'encoder':<10}{'batch':>6}{'floor img/s':>13}{'features':>10}{'ratio':>7}{'synbench fwd':>14}{'ratio':>7}{'setup s':>9}")
    for r in rows:
        i = r["images_per_s"]
        print(f"{r['encoder']:<10}{r['batch_size']:>6}{i['floor']:>13.2f}{i['features']:>10.2f}{r['ratio_features']:>7.3f}"
              f"{i['synbench-forward']:>14.2f}{r['ratio_synbench_forward']:>7.3f}{r['setup_seconds']:>9.2f}")
    out = {"machine": info, "throughput": rows}
    if not a.skip_quick:
        q = quick_budget_time(dev)
        print(f"quick budget, {q['source']} on {q['dataset']}: {q['seconds']:.1f} s; stages: {q['stages']}")
        out["quick_budget"] = q
    print(json.dumps(out))


if __name__ == "__main__":
    main()
