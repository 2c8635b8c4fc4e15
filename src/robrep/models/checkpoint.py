"""robrep checkpoints: weights as safetensors, the model spec and metadata as JSON in its header.

``save_model(path, model, meta)`` writes one ``.safetensors`` file atomically.
``load(path)`` returns the model ready to use (normalization restored from the file).
Other tools' formats are recognised by the loaders in :data:`LOADERS`; nothing is unpickled
unless the caller passes ``trust=True``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .._registry import Registry
from ..errors import CheckpointError
from ..io.atomic import atomic_path, to_jsonable
from .base import ModelSpec, RobrepModel, flush_denormals_
from .zoo import model_from_spec

__all__ = ["FORMAT_VERSION", "LOADERS", "load", "load_with_meta", "read_meta", "save_model", "safe_torch_load"]

FORMAT_VERSION = 1

# A loader takes (path, arch, trust, options) and returns (model, meta) or None if the file is
# not in its format. Loaders are tried in registration order.
Loader = Callable[..., "tuple[RobrepModel, dict[str, Any]] | None"]
LOADERS: Registry[Loader] = Registry("checkpoint format")
_LOADER_ORDER: list[str] = []


def register_loader(name: str, help: str = "") -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        LOADERS.add(name, fn, help=help)
        _LOADER_ORDER.append(name)
        return fn

    return deco


def save_model(path: str | os.PathLike[str], model: RobrepModel, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (weights + spec + ``meta``) to ``path`` atomically as safetensors."""
    from safetensors.torch import save_file

    if not isinstance(model, RobrepModel):
        raise CheckpointError("save_model needs a RobrepModel (see robrep.models.wrap)")
    header = {"format": "robrep", "version": FORMAT_VERSION, "spec": model.spec.to_dict(), "meta": to_jsonable(meta or {})}
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"robrep": json.dumps(header)})
    return path


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON header of a robrep safetensors checkpoint (spec and meta), without loading weights."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); it may be truncated or corrupt") from e
    if "robrep" not in md:
        raise CheckpointError(f"{path} is a safetensors file without robrep metadata; pass --arch to load its weights")
    try:
        return json.loads(md["robrep"])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} has corrupt robrep metadata: {e}") from e


def safe_torch_load(path: str | os.PathLike[str], trust: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True``; a pickle that needs code only with ``trust``."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        if not trust:
            msg = str(e)
            needs = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)", msg)
            if needs is None and _is_raw_pickle(path):
                raise CheckpointError(
                    f"{path} cannot be read safely: it is a pickle in a form the safe loader does not accept, so loading "
                    "it could run code. If you trust its source, pass --trust-checkpoint (trust=True); otherwise it may be corrupt."
                ) from e
            if needs is None or "Unsupported operand" in msg:
                first = (msg.splitlines() or [""])[0][:160]
                raise CheckpointError(f"{path} is truncated or corrupt ({type(e).__name__}: {first}); restore it from a copy") from e
            raise CheckpointError(
                f"{path} cannot be loaded safely: it is a pickle that references {needs.group(1)}, so loading it could "
                "run code. If you trust its source, pass --trust-checkpoint (trust=True)."
            ) from e
        warnings.warn(f"loading {path} with full unpickling (trust=True): this can run arbitrary code", stacklevel=2)
        try:
            return torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as e2:
            raise CheckpointError(f"{path} could not be loaded even when trusted: {e2}") from e2


def load_with_meta(
    path: str | os.PathLike[str],
    *,
    arch: str | None = None,
    trust: bool = False,
    device: str | torch.device = "cpu",
    download: bool = False,
    adapt_channels: bool = False,
    resize: bool = True,
    **options: Any,
) -> tuple[RobrepModel, dict[str, Any]]:
    """Load any supported model source; return the model (eval mode) and its metadata.

    ``path`` is a checkpoint file (robrep or a format of :data:`LOADERS`) or a source string
    ``tv:``/``timm:``/``hf:``/``open_clip:`` (:mod:`robrep.models.sources`; ``download`` lets
    those fetch weights missing from the local caches). ``adapt_channels=True`` lets a 3-channel
    model take 1-channel images (the channel is repeated); ``resize=False`` makes a model whose
    source states an input size refuse other sizes instead of resizing them inside.
    """
    from .source_registry import load_source, set_input_policy, split_source

    scheme, _ = split_source(path)
    if scheme is not None:
        return load_source(path, download=download, adapt_channels=adapt_channels, resize=resize, device=device,
                           arch=arch, trust=trust, **options)
    p = Path(path)
    if p.is_dir():
        cand = p / "model.safetensors"
        if not cand.is_file():
            raise CheckpointError(f"{p} is a folder without model.safetensors; pass the checkpoint file")
        p = cand
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist; train one with `robrep train` or check the path")
    if p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {p} is empty (0 bytes); it was not written completely")
    for name in _LOADER_ORDER:
        out = LOADERS.get(name)(p, arch=arch, trust=trust, **options)
        if out is not None:
            model, meta = out
            meta.setdefault("format", name)
            model = set_input_policy(model, adapt_channels=adapt_channels, resize=resize)
            flush_denormals_(model)  # subnormal weights slow CPU matmuls up to ~30x and change nothing
            return model.to(device).eval(), meta
    raise CheckpointError(f"{p}: unknown checkpoint format (or a corrupt file); robrep reads the formats of `robrep list formats`")


def load(path: str | os.PathLike[str], **kwargs: Any) -> RobrepModel:
    """Load a model source (a checkpoint file, or ``tv:``/``timm:``/``hf:``/``open_clip:``) as a ready
    :class:`RobrepModel` in eval mode (see :func:`load_with_meta`)."""
    return load_with_meta(path, **kwargs)[0]


def _load_state(model: RobrepModel, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise CheckpointError(
            f"{path} does not fit architecture {model.spec.arch!r}: {str(e).splitlines()[0]} ... "
            "(is it a checkpoint of another architecture? pass the right --arch)"
        ) from e
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit architecture {model.spec.arch!r}: missing {list(missing)[:5]}, "
            f"unexpected {list(unexpected)[:5]}; pass the right --arch"
        )


@register_loader("robrep", help="robrep .safetensors with spec and metadata in the header")
def _load_robrep(path: Path, arch: str | None = None, trust: bool = False, **_: Any) -> tuple[RobrepModel, dict[str, Any]] | None:
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or not head[8:9] == b"{":  # safetensors: u64 header length then JSON
        return None
    from safetensors.torch import load_file

    try:
        header = read_meta(path)
    except CheckpointError:
        if _has_robrep_header(path):
            raise
        return None  # plain safetensors (timm, HF...): the "state-dict" loader handles it with --arch
    spec = ModelSpec.from_dict(header["spec"])
    if arch is not None and arch != spec.arch:
        raise CheckpointError(f"{path} holds a {spec.arch!r} model, not {arch!r}")
    model = model_from_spec(spec)
    try:
        state = load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"{path} is truncated or corrupt ({e}); restore it from a copy") from e
    _load_state(model, state, path)
    meta = dict(header.get("meta") or {})
    return model, meta


def _has_robrep_header(path: Path) -> bool:
    """Whether the safetensors JSON header (readable even if the file is truncated) holds robrep metadata."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or n > 100_000_000:
                return False
            head = f.read(n)
        return b'"robrep"' in head
    except OSError:
        return False


def _is_raw_pickle(path: str | os.PathLike[str]) -> bool:
    """A plain pickle stream (protocol 2-5), not a torch zip archive."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5
