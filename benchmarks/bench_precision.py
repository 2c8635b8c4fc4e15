"""Mixed precision (``--precision auto``: bf16 autocast, channels-last, float32 verdicts and
re-check) against float32, side by side in one run.

    python benchmarks/bench_precision.py                    # everything below, 1 thread
    python benchmarks/bench_precision.py --quick            # smoke test (tiny sizes)
    python benchmarks/bench_precision.py --only eval        # eval | train | certify
    python benchmarks/bench_precision.py --checkpoint artifacts/core/mnist-linf03/model.safetensors

Sections (interleaved rounds, medians; each time is wall seconds AND process CPU seconds: with one
thread, CPU seconds stay close to the idle wall time when other jobs share the machine):

1. **PGD-10 robust-accuracy evaluation** (attack + the verdicts robust accuracy needs), per model:
   robrep ``auto`` vs robrep ``fp32`` (today's ``pgd``) vs torchattacks ``PGD`` in float32 (+ its
   verdict forward pass); robust accuracy of each on the same images. Models: ResNet-18 on 3x32x32
   (fresh weights, random images, labels = its own predictions so every verdict is the attack's),
   batch 128, linf 8/255; the MNIST CNN (``small-cnn``; ``--checkpoint`` or, with MNIST found
   through ``ROBREP_DATA``, trained here for 300 SGD steps) on MNIST test images, linf 0.1 (trained
   here) / 0.3 (a checkpoint), batch 128.
2. **PGD-10 adversarial training epoch slice** (``robrep.train``, objective ``pgd``, steps 10,
   synthetic MNIST-shape data): ``auto`` (``amp`` + ``channels_last``) vs fp32.
3. **Certification throughput**: noisy forward passes of smoothing (``sample_counts``), samples/s
   of ``Bf16Model`` (``robrep certify --precision bf16``) vs float32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import fit_steps, machine_info, markdown_table, median, print_machine  # noqa: E402

import robrep  # noqa: E402
from robrep.attacks import create_attack, pgd  # noqa: E402
from robrep.attacks.precision import Bf16Model  # noqa: E402
from robrep.models import create_model  # noqa: E402

DEV = torch.device("cpu")


def _sync() -> None:
    if DEV.type == "cuda":
        torch.cuda.synchronize(DEV)


def timed_rounds(fns: dict[str, Any], repeats: int) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds of each callable, interleaved, order rotated per round; keeps the last result."""
    names = list(fns)
    out: dict[str, dict[str, Any]] = {k: {"wall": [], "cpu": [], "result": None} for k in names}
    for r in range(repeats):
        for k in names[r % len(names):] + names[: r % len(names)]:
            _sync()
            t, c = time.perf_counter(), time.process_time()
            res = fns[k]()
            _sync()
            out[k]["wall"].append(time.perf_counter() - t)
            out[k]["cpu"].append(time.process_time() - c)
            out[k]["result"] = res
    return out


def mnist_cnn(checkpoint: str | None, quick: bool) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, float, str]:
    if checkpoint:
        model = robrep.load(checkpoint).eval()
        te = robrep.load_dataset("mnist", "test")
        x, y = te.head(512).tensors()
        return model, x, y, 0.3, f"checkpoint {checkpoint}"
    try:
        tr, te = robrep.load_dataset("mnist", "train"), robrep.load_dataset("mnist", "test")
    except Exception as e:  # no MNIST: fresh weights on random images
        torch.manual_seed(0)
        model = create_model("small-cnn", num_classes=10, input_shape=(1, 28, 28)).eval()
        x = torch.rand(512, 1, 28, 28)
        with torch.no_grad():
            y = model(x).argmax(1)
        return model, x, y, 0.03, f"fresh weights, random images (MNIST not found: {e})"
    torch.manual_seed(0)
    model = create_model("small-cnn", num_classes=10, input_shape=(1, 28, 28), dataset="mnist")
    steps = 30 if quick else 300
    fit_steps(model, tr, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), steps)
    x, y = te.head(512).tensors()
    return model, x, y, 0.1, f"trained here ({steps} SGD steps on MNIST, standard)"


def torchattacks_pgd(model: torch.nn.Module, eps: float, steps: int) -> Any:
    import torchattacks

    return torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=True)


def _eval_case(args: argparse.Namespace, results: dict[str, Any], name: str, model: torch.nn.Module, x: torch.Tensor,
               y: torch.Tensor, eps: float) -> None:
    thr = robrep.threat("linf", eps)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    auto = create_attack("pgd", steps=10, precision="auto")

    def run_auto() -> torch.Tensor:
        return ~auto(model, x, y, thr, generator=torch.Generator(DEV).manual_seed(0)).success

    def run_fp32() -> torch.Tensor:
        return ~pgd(model, x, y, thr, steps=10, generator=torch.Generator(DEV).manual_seed(0)).success

    fns = {"robrep auto": run_auto, "robrep fp32": run_fp32}
    try:
        ta = torchattacks_pgd(model, eps, 10)

        def run_ta() -> torch.Tensor:
            torch.manual_seed(0)
            xa = ta(x, y)
            with torch.no_grad():
                return model(xa).argmax(1) == y

        import torchattacks

        fns[f"torchattacks {torchattacks.__version__} fp32"] = run_ta
    except Exception as e:  # pragma: no cover - optional peer
        print(f"torchattacks skipped: {type(e).__name__}: {e}")
    t = timed_rounds(fns, args.repeats)
    ref_w, ref_c = median(t["robrep auto"]["wall"]), median(t["robrep auto"]["cpu"])
    rows = []
    for k, v in t.items():
        w, c = median(v["wall"]), median(v["cpu"])
        rob = float((v["result"] & correct).float().mean())
        rows.append([k, w, c, w / ref_w, c / ref_c, rob])
    print(f"\n### PGD-10 robust-accuracy evaluation: {name}, batch {len(y)}, linf {eps:g}, "
          f"clean accuracy {float(correct.float().mean()):.3f}\n")
    print(markdown_table(["implementation", "wall s", "CPU s", "wall x auto", "CPU x auto", "robust acc."], rows))
    accs = {r[0]: r[5] for r in rows}
    ok = accs["robrep auto"] <= min(accs.values()) + 0.003 + 1e-9
    print(f"\nrobrep auto's robust accuracy within +0.3 points of every fp32 implementation: {'yes' if ok else 'NO'}")
    results.setdefault("eval", []).append({"case": name, "batch": len(y), "eps": eps, "rows": rows,
                                           "raw": {k: {"wall": v["wall"], "cpu": v["cpu"]} for k, v in t.items()}})


def bench_eval(args: argparse.Namespace, results: dict[str, Any]) -> None:
    cases = []
    if "resnet18" in args.models:
        torch.manual_seed(0)
        rn = create_model("resnet18", num_classes=10, input_shape=(3, 32, 32)).eval()
        b = 16 if args.quick else args.batch
        x = torch.rand(b, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        rn, x = rn.to(DEV), x.to(DEV)
        with torch.no_grad():
            y = rn(x).argmax(1)
        cases.append(("ResNet-18 3x32x32 (fresh weights)", rn.to(DEV), x.to(DEV), y.to(DEV), 8 / 255))
    if "small-cnn" in args.models:
        m, x, y, eps, note = mnist_cnn(args.checkpoint, args.quick)
        b = 32 if args.quick else args.batch
        cases.append((f"MNIST CNN (small-cnn, {note})", m.to(DEV), x[:b].to(DEV), y[:b].to(DEV), eps))
    for name, model, x, y, eps in cases:
        _eval_case(args, results, name, model, x, y, eps)


def bench_train(args: argparse.Namespace, results: dict[str, Any]) -> None:
    from robrep.data import DatasetInfo, TensorImageData

    nb = 2 if args.quick else args.train_batches
    bs = 32 if args.quick else 128
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(nb * bs, 1, 28, 28, generator=g) * 255).to(torch.uint8)
    y = torch.randint(0, 10, (nb * bs,), generator=g)
    info = DatasetInfo("synthetic", 10, (1, 28, 28), (0.5,), (0.5,))
    data = TensorImageData(x, y, info, "train")
    import tempfile

    def run(bf16: bool) -> Any:
        cfg = robrep.TrainConfig(model="small-cnn", dataset="demo", objective="pgd", eps=0.1, epochs=1, batch_size=bs,
                                 eval_n=0, seed=0, amp=bf16, channels_last=bf16, objective_kwargs={"steps": 10},
                                 device=str(DEV))
        with tempfile.TemporaryDirectory() as d:
            return robrep.train(cfg, d, train_data=data, show_progress=False).history[-1]

    t = timed_rounds({"auto (bf16 autocast, channels_last)": lambda: run(True), "fp32": lambda: run(False)}, args.repeats)
    rows = []
    for k, v in t.items():
        rows.append([k, median(v["wall"]), median(v["cpu"]), median(t["fp32"]["wall"]) / median(v["wall"]),
                     median(t["fp32"]["cpu"]) / median(v["cpu"]), v["result"].get("train_loss", float("nan"))])
    print(f"\n### PGD-10 adversarial training, one epoch slice: small-cnn, {nb} batches of {bs}, synthetic 1x28x28\n")
    print(markdown_table(["precision", "wall s", "CPU s", "fp32 wall / this", "fp32 CPU / this", "train loss"], rows))
    results["train"] = {"batches": nb, "batch": bs, "rows": rows}


def _certify_case(args: argparse.Namespace, results: dict[str, Any], arch: str, shape: tuple[int, ...], n: int) -> None:
    from robrep.certify.smoothing import sample_counts

    torch.manual_seed(0)
    m = create_model(arch, num_classes=10, input_shape=shape).eval().to(DEV)
    w = Bf16Model(m).eval()
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(2)).to(DEV)
    nn_ = n if arch == "small-cnn" else max(n // 10, 200)

    def counts(model: torch.nn.Module) -> torch.Tensor:
        return sample_counts(model, x, 0.25, nn_, batch_size=min(nn_, 1000), generator=torch.Generator(DEV).manual_seed(0))

    t = timed_rounds({"bf16 (Bf16Model)": lambda: counts(w), "fp32": lambda: counts(m)}, args.repeats)
    c16, c32 = t["bf16 (Bf16Model)"]["result"], t["fp32"]["result"]
    rows = [[k, nn_ / median(v["wall"]), nn_ / median(v["cpu"]), median(t["fp32"]["wall"]) / median(v["wall"]),
             median(t["fp32"]["cpu"]) / median(v["cpu"])] for k, v in t.items()]
    print(f"\n### Smoothing noise passes: {arch} {shape}, {nn_} samples per image, sigma 0.25\n")
    print(markdown_table(["precision", "samples/s (wall)", "samples/s (CPU)", "x fp32 (wall)", "x fp32 (CPU)"], rows))
    print(f"\ntop class fp32 {int(c32.argmax())} ({int(c32.max())}/{nn_}) vs bf16 {int(c16.argmax())} ({int(c16.max())}/{nn_}); "
          f"counts differing: {int((c32 - c16).abs().sum()) // 2}")
    results.setdefault("certify", []).append({"arch": arch, "samples": nn_, "rows": rows})


def bench_certify(args: argparse.Namespace, results: dict[str, Any]) -> None:
    n = 500 if args.quick else args.cert_samples
    for arch, shape in (("small-cnn", (1, 28, 28)), ("resnet18", (3, 32, 32))):
        if arch in args.models:
            _certify_case(args, results, arch, shape, n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", default=["eval", "train", "certify"], help="sections (default: %(default)s)")
    p.add_argument("--models", nargs="*", default=["resnet18", "small-cnn"], help="(default: %(default)s)")
    p.add_argument("--checkpoint", default=None, help="a trained MNIST small-cnn (default: train one here)")
    p.add_argument("--batch", type=int, default=128, help="evaluation batch (default: %(default)s)")
    p.add_argument("--train-batches", type=int, default=10, help="batches of the training slice (default: %(default)s)")
    p.add_argument("--cert-samples", type=int, default=4000, help="noise samples per image (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 round: a smoke test")
    p.add_argument("--device", default="cpu", help="cpu or cuda (GPU table: batch 512) (default: %(default)s)")
    p.add_argument("--json", default=None, help="write all numbers to this file")
    a = p.parse_args()
    if a.quick:
        a.repeats = 1
    global DEV
    DEV = torch.device(a.device)
    torch.set_num_threads(a.threads)
    info = machine_info(DEV)
    print_machine(info)
    print(f"native bf16 on {DEV}: {robrep.runtime.bf16_supported(DEV)} "
          f"(auto runs {robrep.runtime.resolve_precision('auto', DEV)})")
    results: dict[str, Any] = {"machine": info}
    if "eval" in a.only:
        bench_eval(a, results)
    if "train" in a.only:
        bench_train(a, results)
    if "certify" in a.only:
        bench_certify(a, results)
    results["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    print(f"\nload average (1 min) at the end: {results['load_avg_1min_end']}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
