"""The training loop.

Determinism and resume: the data order, attack starts and noise of epoch ``e`` come from
generators seeded by ``(seed, e)``, and the global torch RNG is re-seeded from ``(seed, e)``
at the start of each epoch. A run resumed from the checkpoint of epoch ``e`` therefore ends
with exactly the same weights as an uninterrupted run (on the same device and threads).

Distributed data parallel: launched under ``torchrun`` (``WORLD_SIZE > 1``), each rank takes its
slice of every global batch (``batch_size`` is the global batch), the model is wrapped in
``DistributedDataParallel`` (gloo on CPU, nccl on CUDA), attacks run per rank on the unwrapped
model (``StepContext.attack_model``), gradients of objective-owned modules are all-reduced, and
rank 0 evaluates and writes checkpoints.

Checkpoints: after each epoch, ``out/checkpoints/epoch-NNNN/`` is written to a temporary
folder and renamed into place (atomic), holding ``model.safetensors`` (weights + spec +
metadata), ``state.pt`` (optimizer, scheduler, objective modules; tensors only, loaded with
``weights_only=True``). The final model is also written to ``out/model.safetensors``.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .._compile import maybe_compile
from .._config import config_from_dict
from ..data import ImageData, load_dataset
from ..errors import CheckpointError, InputError, RobrepError
from ..evaluate import evaluate
from ..io.atomic import atomic_write_json
from ..models import RobrepModel, create_model, flush_denormals_, save_model
from ..models.checkpoint import read_meta
from ..objectives import Objective, StepContext, create_objective
from ..progress import progress
from ..runs import write_record
from ..threats import ThreatModel, check_eps_units, threat

__all__ = ["TrainConfig", "TrainResult", "train", "build_model_for", "find_latest_checkpoint"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved as JSON next to its results).

    Attributes:
        model: architecture name (``robrep list models``).
        dataset: dataset name (``robrep list datasets``).
        objective: training objective (``robrep list objectives``).
        norm, eps: threat model for adversarial objectives (pixel units, [0,1] images).
        epochs, batch_size: training length and batch size.
        optimizer: ``sgd`` or ``adam``; lr, momentum, weight_decay: its settings.
        schedule: ``constant``, ``step`` (x0.1 at ``milestones``, fractions of training),
            ``cosine`` or ``cyclic`` (linear up to lr at 40 % then down to 0, Wong et al.).
        eps_warmup: fraction of training over which eps ramps linearly from 0.
        train_fraction: class-balanced fraction of the training set to use.
        seed: seeds data order, initialisation, attack starts and noise.
        device: ``auto``, ``cpu``, ``cuda``...
        amp: bf16 autocast of the forward passes (objective and attacks) on CUDA and on CPU;
            weights, optimizer state and gradients stay float32, and bf16 needs no gradient
            scaling. On CPU it is only faster on processors with native bf16 (AVX512-BF16 /
            AMX); elsewhere it is slower but runs. Ignored on other device types.
        channels_last: NHWC memory format for model and batches (faster convolutions on GPUs).
        compile: run the training model (and the attacks inside the objective) through
            ``torch.compile`` (opt-in; numerically close to, not bit-identical with, eager mode).
        eval_n, eval_steps: per-epoch evaluation on the first ``eval_n`` test images, with a
            PGD of ``eval_steps`` steps when eps > 0 (0 disables robust evaluation).
        model_kwargs, objective_kwargs: extra options for the architecture / objective.
        data_root: data folder (default ``$ROBREP_DATA``).
        keep_checkpoints: number of epoch checkpoints kept.
    """

    model: str = "small-cnn"
    dataset: str = "demo"
    objective: str = "standard"
    norm: str = "linf"
    eps: float = 0.0
    epochs: int = 5
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    eps_warmup: float = 0.0
    train_fraction: float = 1.0
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    eval_n: int = 1000
    eval_steps: int = 10
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    objective_kwargs: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    keep_checkpoints: int = 2

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return config_from_dict(cls, d, "training")

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError(f"epochs and batch_size must be >= 1 (got {self.epochs}, {self.batch_size})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr must be a positive number, got {self.lr}")
        if self.optimizer not in ("sgd", "adam"):
            raise InputError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.schedule not in ("constant", "step", "cosine", "cyclic"):
            raise InputError(f"schedule must be constant, step, cosine or cyclic, got {self.schedule!r}")
        if not 0 <= self.eps_warmup <= 1:
            raise InputError(f"eps_warmup is a fraction of training in [0,1], got {self.eps_warmup}")
        threat(self.norm, self.eps)  # validates norm and eps
        check_eps_units(self.norm, self.eps)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`: the trained model, its checkpoint path, per-epoch history."""

    model: RobrepModel
    checkpoint: Path
    history: list[dict[str, float]]
    seconds: float


def build_model_for(cfg: TrainConfig, data: ImageData) -> RobrepModel:
    """The architecture of ``cfg`` sized for ``data`` (classes, shape, normalization)."""
    info = data.info
    return create_model(cfg.model, num_classes=info.num_classes, input_shape=info.input_shape,
                        mean=info.mean, std=info.std, **cfg.model_kwargs)


def _dist_setup(dev: torch.device) -> tuple[int, int, torch.device, bool]:
    """(rank, world size, device, whether we initialised the process group)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, dev, False
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        created = True
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    return dist.get_rank(), dist.get_world_size(), dev, created


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise InputError(f"unknown device {name!r}: {e}") from e


def _seed(seed: int, epoch: int, salt: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + salt) % (2**63 - 1)


def _lr_lambda(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        t = min(step / max(total, 1), 1.0)
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        if cfg.schedule == "cyclic":
            return t / 0.4 if t < 0.4 else max(0.0, (1 - t) / 0.6)
        return 0.1 ** sum(t >= m for m in cfg.milestones)

    return f


def find_latest_checkpoint(out: Path) -> Path | None:
    """The newest complete ``epoch-NNNN`` folder under ``out/checkpoints`` (None if none)."""
    d = out / "checkpoints"
    if not d.is_dir():
        return None
    cands = sorted(p for p in d.iterdir() if p.is_dir() and p.name.startswith("epoch-") and (p / "state.pt").is_file())
    return cands[-1] if cands else None


def _save_epoch(out: Path, epoch: int, model: RobrepModel, meta: dict[str, Any], state: dict[str, Any], keep: int) -> Path:
    ck = out / "checkpoints"
    ck.mkdir(parents=True, exist_ok=True)
    final = ck / f"epoch-{epoch:04d}"
    tmp = ck / f".tmp-epoch-{epoch:04d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        save_model(tmp / "model.safetensors", model, meta)
        torch.save(state, tmp / "state.pt")
        with open(tmp / "state.pt", "rb") as f:
            os.fsync(f.fileno())
    except OSError as e:  # disk full, permissions: keep the previous epoch, say what to do
        shutil.rmtree(tmp, ignore_errors=True)
        raise RobrepError(f"cannot write checkpoint {final}: {e.strerror or e}; check free space and permissions, then --resume") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    old = sorted(p for p in ck.iterdir() if p.is_dir() and p.name.startswith("epoch-"))
    for p in old[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    return final


@dataclass
class _Setup:
    """What one training run works with (built by :func:`_setup`)."""

    model: RobrepModel  # the unwrapped model (checkpointed, evaluated)
    train_model: nn.Module  # what the objective runs: DDP and/or compiled wrapper of ``model``
    obj: Objective
    extra: nn.Module | None  # objective-owned modules (critics...), trained and checkpointed too
    base_threat: ThreatModel | None
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    steps_per_epoch: int
    total: int


def _load_data(cfg: TrainConfig, train_data: ImageData | None, test_data: ImageData | None) -> tuple[ImageData, ImageData | None]:
    """The training data (``cfg.train_fraction`` of it) and the test data (None without eval)."""
    train_data = train_data if train_data is not None else load_dataset(cfg.dataset, "train", root=cfg.data_root)
    if cfg.train_fraction < 1 and hasattr(train_data, "fraction"):
        train_data = train_data.fraction(cfg.train_fraction, seed=cfg.seed)
    if test_data is None and cfg.eval_n > 0:
        test_data = load_dataset(cfg.dataset, "test", root=cfg.data_root)
    return train_data, test_data


def _setup(cfg: TrainConfig, train_data: ImageData, model: RobrepModel | None, objective: Objective | None,
           dev: torch.device, world: int) -> _Setup:
    """Model, objective (set up on a first batch), threat, wrappers, optimizer and schedule."""
    torch.manual_seed(_seed(cfg.seed, -1, 0))
    model = model if model is not None else build_model_for(cfg, train_data)
    model = model.to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    obj = objective if objective is not None else create_objective(cfg.objective, **cfg.objective_kwargs)
    base_threat: ThreatModel | None = threat(cfg.norm, cfg.eps) if (obj.needs_threat or cfg.eps > 0) else None
    if obj.needs_threat and (base_threat is None or base_threat.eps <= 0):
        raise InputError(f"objective {cfg.objective!r} needs a threat model: give --eps > 0")
    x0, _ = next(iter(train_data.batches(min(cfg.batch_size, len(train_data)))))
    obj.setup(model, x0.to(dev))
    extra = obj.extra_modules()
    if extra is not None:
        extra.to(dev)
    train_model: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        if extra is not None:  # same initial critic on every rank
            for t in extra.state_dict().values():
                dist.broadcast(t, 0)
    train_model = maybe_compile(train_model, cfg.compile)  # shares the parameters of ``model``
    params = list(model.parameters()) + (list(extra.parameters()) if extra is not None else [])
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=False)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = train_data.num_batches(cfg.batch_size, drop_last=len(train_data) > cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, total))
    return _Setup(model, train_model, obj, extra, base_threat, opt, sched, steps_per_epoch, total)


def _resume(out: Path, cfg: TrainConfig, run: _Setup, dev: torch.device,
            log: Callable[[str], None] | None) -> tuple[int, list[dict[str, float]]]:
    """Load the newest checkpoint in ``out`` into ``run``: (first epoch to train, history so far)."""
    ck = find_latest_checkpoint(out)
    if ck is None:
        return 0, []
    header = read_meta(ck / "model.safetensors")
    saved_cfg = header.get("meta", {}).get("config", {})
    if saved_cfg and TrainConfig.from_dict(saved_cfg) != cfg:
        raise CheckpointError(f"{out} holds a run with another configuration; use another --out or the same options")
    from safetensors.torch import load_file

    run.model.load_state_dict(load_file(str(ck / "model.safetensors")))
    try:
        st = torch.load(ck / "state.pt", map_location=dev, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{ck / 'state.pt'} is corrupt ({e}); delete {ck} to resume from the previous epoch") from e
    run.opt.load_state_dict(st["optimizer"])
    run.sched.load_state_dict(st["scheduler"])
    if run.extra is not None and "objective" in st:
        run.extra.load_state_dict(st["objective"])
    start_epoch = int(st["epoch"]) + 1
    if log:
        log(f"resuming from {ck} (epoch {start_epoch})")
    return start_epoch, list(header.get("meta", {}).get("history", []))


def _train_epoch(cfg: TrainConfig, run: _Setup, train_data: ImageData, epoch: int, step: int, dev: torch.device,
                 rank: int, world: int, show_progress: bool) -> tuple[dict[str, float], int]:
    """One epoch of optimizer steps: (mean of each objective metric as ``train_<name>``, next step)."""
    torch.manual_seed(_seed(cfg.seed, epoch, 1))
    data_gen = torch.Generator().manual_seed(_seed(cfg.seed, epoch, 2))
    atk_gen = torch.Generator(device=dev).manual_seed(_seed(cfg.seed, epoch, 3))
    use_amp = cfg.amp and dev.type in ("cuda", "cpu")  # bf16 autocast: no GradScaler needed
    per_rank = cfg.batch_size // world
    sync_every_step = dev.type == "cpu"  # a host sync costs nothing on CPU: fail fast there
    run.train_model.train()
    if run.extra is not None:
        run.extra.train()
    # metrics are summed on the device (float64, the same sums as Python floats) and read
    # once per epoch: no host synchronisation per step
    sums: dict[str, torch.Tensor] = {}
    count = 0
    diverged = torch.zeros((), dtype=torch.bool, device=dev)
    batches = train_data.batches(cfg.batch_size, shuffle=True, generator=data_gen, drop_last=len(train_data) > cfg.batch_size, device=dev)
    for xb, yb in progress(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", total=run.steps_per_epoch, enable=show_progress):
        if world > 1:
            xb, yb = xb[rank * per_rank : (rank + 1) * per_rank], yb[rank * per_rank : (rank + 1) * per_rank]
        if cfg.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        thr = run.base_threat
        if thr is not None and cfg.eps_warmup > 0:
            thr = thr.with_eps(cfg.eps * min(1.0, (step + 1) / (cfg.eps_warmup * run.total)))
        ctx = StepContext(thr, atk_gen, epoch, step, attack_model=run.model if world > 1 else None)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
            loss, metrics = run.obj.loss(run.train_model, xb, yb, ctx)
        if sync_every_step:
            if not torch.isfinite(loss):
                raise InputError(f"training diverged at epoch {epoch + 1} (loss {float(loss)}); lower --lr")
        else:  # accelerators: check without a per-step host sync (every 50 steps and at the end)
            diverged |= ~torch.isfinite(loss.detach())
            if count % 50 == 49 and bool(diverged):
                raise InputError(f"training diverged at epoch {epoch + 1} (loss {float(loss)}); lower --lr")
        _optimizer_step(run, loss, dev, world)
        step += 1
        count += 1
        for k, v in metrics.items():
            v64 = v.detach().to(torch.float64) if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=torch.float64)
            sums[k] = sums[k] + v64.to(sums[k].device) if k in sums else v64.clone()
    if not sync_every_step and bool(diverged):
        raise InputError(f"training diverged at epoch {epoch + 1} (non-finite loss); lower --lr")
    return {f"train_{k}": float(v) / max(count, 1) for k, v in sums.items()}, step  # the epoch's one host sync


def _optimizer_step(run: _Setup, loss: torch.Tensor, dev: torch.device, world: int) -> None:
    """Backward, all-reduce of objective-owned gradients (DDP), step, denormal flush, schedule."""
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if world > 1 and run.extra is not None:
        for prm in run.extra.parameters():
            if prm.grad is not None:
                dist.all_reduce(prm.grad)
                prm.grad /= world
    run.opt.step()
    if dev.type == "cpu":  # subnormal weights make CPU matmuls up to ~30x slower
        flush_denormals_(run.train_model, count=False)
        if run.extra is not None:
            flush_denormals_(run.extra, count=False)
    run.sched.step()


def _evaluate_epoch(cfg: TrainConfig, run: _Setup, test_data: ImageData, dev: torch.device) -> dict[str, float]:
    """Clean (and PGD, with a threat) accuracy on ``cfg.eval_n`` test images."""
    thr = run.base_threat
    thr_eval = thr if (thr is not None and thr.eps > 0 and cfg.eval_steps > 0) else None
    ev = evaluate(run.model, test_data, threat=thr_eval, attack="pgd", attack_kwargs={"steps": cfg.eval_steps},
                  n=cfg.eval_n, seed=cfg.seed, device=dev)
    rec = {"test_clean_accuracy": ev.clean_accuracy}
    if ev.robust_accuracy is not None:
        rec["test_robust_accuracy"] = ev.robust_accuracy
    return rec


def _meta(cfg: TrainConfig, run: _Setup, train_data: ImageData, epoch: int, history: list[dict[str, float]]) -> dict[str, Any]:
    """The metadata stored with a checkpoint or the final model."""
    thr = run.base_threat
    return {"config": cfg.to_dict(), "dataset": train_data.info.name, "objective": {"name": run.obj.name, **run.obj.config()},
            "threat": thr.to_dict() if thr is not None else None, "epoch": epoch, "history": history}


def _checkpoint_epoch(out: Path, cfg: TrainConfig, run: _Setup, train_data: ImageData, epoch: int,
                      history: list[dict[str, float]]) -> None:
    state = {"optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(), "epoch": epoch}
    if run.extra is not None:
        state["objective"] = run.extra.state_dict()
    _save_epoch(out, epoch, run.model, _meta(cfg, run, train_data, epoch + 1, history), state, cfg.keep_checkpoints)


def _save_final(out: Path, cfg: TrainConfig, run: _Setup, train_data: ImageData, history: list[dict[str, float]]) -> Path:
    """``out/model.safetensors`` (and ``out/objective.safetensors`` for objective-owned modules)."""
    path = out / "model.safetensors"
    save_model(path, run.model, _meta(cfg, run, train_data, cfg.epochs, history))
    if run.extra is not None:
        from safetensors.torch import save_file

        from ..io.atomic import atomic_path

        with atomic_path(out / "objective.safetensors") as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in run.extra.state_dict().items()}, str(tmp),
                      metadata={"objective": json.dumps({"name": run.obj.name, **run.obj.config()})})
    return path


def train(
    cfg: TrainConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    train_data: ImageData | None = None,
    test_data: ImageData | None = None,
    model: RobrepModel | None = None,
    objective: Objective | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] | None = None,
    stop_after_epoch: int | None = None,
) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.dataset`` with ``cfg.objective``; checkpoint every epoch.

    Args:
        cfg: the run's configuration.
        out: run folder (config.json, checkpoints/, model.safetensors, record.json).
        resume: continue from the newest checkpoint in ``out`` (same result as uninterrupted).
        train_data, test_data: override the datasets named in ``cfg``.
        model: start from this model instead of a fresh ``cfg.model``.
        objective: use this objective instance instead of ``cfg.objective``.
        stop_after_epoch: stop (as if killed) after this many epochs (testing resume).
    """
    cfg.validate()
    out = Path(out)
    rank, world, dev, created_pg = _dist_setup(_device(cfg.device))
    if cfg.batch_size % world:
        raise InputError(f"batch_size {cfg.batch_size} must be divisible by the number of processes ({world})")
    t0 = time.time()
    train_data, test_data = _load_data(cfg, train_data, test_data)
    run = _setup(cfg, train_data, model, objective, dev, world)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RobrepError(f"cannot write in {out}: {e.strerror or e}; choose a writable --out folder") from e
    start_epoch, history = _resume(out, cfg, run, dev, log) if resume else (0, [])
    if rank == 0:
        atomic_write_json(out / "config.json", cfg.to_dict())

    step = start_epoch * run.steps_per_epoch
    for epoch in range(start_epoch, cfg.epochs):
        te = time.time()
        means, step = _train_epoch(cfg, run, train_data, epoch, step, dev, rank, world, show_progress)
        rec: dict[str, float] = {"epoch": epoch + 1, "lr": run.opt.param_groups[0]["lr"], "epoch_seconds": time.time() - te}
        rec.update(means)
        if test_data is not None and cfg.eval_n > 0 and run.obj.supervised and rank == 0:
            rec.update(_evaluate_epoch(cfg, run, test_data, dev))
        history.append(rec)
        if log:
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
        if rank == 0:
            _checkpoint_epoch(out, cfg, run, train_data, epoch, history)
        if world > 1:
            dist.barrier()
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < cfg.epochs:
            return TrainResult(run.model, out / "checkpoints", history, time.time() - t0)

    path = out / "model.safetensors"
    seconds = time.time() - t0
    if rank == 0:
        _save_final(out, cfg, run, train_data, history)
        seconds = time.time() - t0
        write_record(out, "train", cfg.to_dict(), history[-1] if history else {}, history=history, seconds=seconds, world_size=world)
    if world > 1:
        dist.barrier()
        if created_pg:
            # DDP's reducer holds the process group: release it first, so that the group's gloo
            # threads are joined here and not in a destructor at interpreter exit (which aborts
            # with "terminate called without an active exception" while a peer still runs)
            run.train_model = run.model
            gc.collect()
            dist.destroy_process_group()
    return TrainResult(run.model.eval(), path, history, seconds)
