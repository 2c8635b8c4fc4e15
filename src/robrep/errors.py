"""User-facing errors.

Every error robrep raises for bad input is a :class:`RobrepError`: its message says what is
wrong *and* what to do. The CLI prints it on one line and exits with status 2.
"""

from __future__ import annotations

__all__ = ["RobrepError", "InputError", "UnknownNameError", "CheckpointError", "DataNotFoundError"]


class RobrepError(Exception):
    """Base class of the errors robrep raises on purpose."""


class InputError(RobrepError, ValueError):
    """An argument (tensor, number, option) is invalid."""


class UnknownNameError(RobrepError, KeyError):
    """A registry lookup failed."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(RobrepError):
    """A checkpoint is missing, corrupt, untrusted or for another architecture."""


class DataNotFoundError(RobrepError, FileNotFoundError):
    """Dataset files are missing."""
