"""Typed exceptions for pydp.

C functions return ``-errno`` and leave a message; :func:`pydp._core.check`
turns that into one of these, each subclassing the matching builtin so that
callers can catch either (``except LookupError`` catches :class:`NotFound`).
"""

from __future__ import annotations

import errno


class PydpError(Exception):
    """Base class of every pydp error."""

    errno: int = 0

    def __init__(self, message: str, err: int = 0) -> None:
        super().__init__(message)
        self.errno = err


class InvalidArgument(PydpError, ValueError):
    """A value the core refused (EINVAL)."""


class NotFound(PydpError, LookupError):
    """A port, device, stage or name that does not exist (ENOENT, ENODEV)."""


class AlreadyExists(PydpError, FileExistsError):
    """Something with that name is already there (EEXIST, EALREADY)."""


class Busy(PydpError, RuntimeError):
    """The resource is in use (EBUSY)."""


class OutOfMemory(PydpError, MemoryError):
    """Hugepage or heap memory ran out (ENOMEM, ENOSPC, ENOBUFS)."""


class NotSupported(PydpError, NotImplementedError):
    """The device or driver cannot do this (ENOTSUP)."""


class PermissionDenied(PydpError, PermissionError):
    """Needs root, or the control socket refused the caller (EPERM, EACCES)."""


class ConfigError(PydpError, ValueError):
    """A pipeline file or definition is wrong; the message names where."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 key: str | None = None, path: tuple = ()) -> None:
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        super().__init__(where + message, errno.EINVAL)
        self.file = file
        self.line = line
        self.key = key
        self.path = path  # keys/indexes inside a stage, e.g. ("routes", 2, "prefix")
        self.stage: str | None = None
        self.message = message


_BY_ERRNO: dict[int, type[PydpError]] = {
    errno.EINVAL: InvalidArgument,
    errno.ERANGE: InvalidArgument,
    errno.ENOENT: NotFound,
    errno.ENODEV: NotFound,
    errno.EEXIST: AlreadyExists,
    errno.EALREADY: AlreadyExists,
    errno.EBUSY: Busy,
    errno.ENOMEM: OutOfMemory,
    errno.ENOSPC: OutOfMemory,
    errno.ENOBUFS: OutOfMemory,
    errno.ENOTSUP: NotSupported,
    errno.EPERM: PermissionDenied,
    errno.EACCES: PermissionDenied,
}


def from_errno(err: int, message: str) -> PydpError:
    """Return the exception for a positive ``errno`` value and a message."""
    cls = _BY_ERRNO.get(err, PydpError)
    return cls(message or errno.errorcode.get(err, f"error {err}"), err)
