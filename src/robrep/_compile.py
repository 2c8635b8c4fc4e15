"""Opt-in ``torch.compile`` for models (training and attacks); off by default everywhere.

``torch.compile(model)`` returns a wrapper sharing the model's parameters; Dynamo caches the
compiled code on the module's ``forward`` (guarded by the module's identity and mode), so
wrapping the same model again per call reuses the compiled code instead of compiling again.
"""

from __future__ import annotations

import os
import shutil

import torch
from torch import nn

from .errors import InputError

__all__ = ["compile_problem", "maybe_compile"]


def compile_problem() -> str | None:
    """Why ``torch.compile`` cannot run here (``None`` when it can): no ``torch.compile``, a
    Python version Dynamo does not support, or no C++ compiler for Inductor's CPU kernels."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    try:
        import torch._dynamo as dynamo

        if not dynamo.is_dynamo_supported():
            return "torch.compile (Dynamo) does not support this Python version"
    except Exception as e:  # pragma: no cover - broken installs
        return f"torch._dynamo cannot be imported ({e})"
    cxx = [os.environ.get("CXX") or "", "g++", "c++", "clang++"]
    if not any(c and shutil.which(c) for c in cxx):
        return "no C++ compiler found (Inductor needs g++ or clang++ for CPU kernels)"
    return None


def maybe_compile(model: nn.Module, enable: bool) -> nn.Module:
    """``torch.compile(model)`` when ``enable`` (raises :class:`InputError` when it cannot run
    here), else ``model`` itself."""
    if not enable:
        return model
    problem = compile_problem()
    if problem is not None:
        raise InputError(f"cannot use torch.compile: {problem}; run without --compile")
    return torch.compile(model)  # type: ignore[return-value]
