"""The private gateway to the C core (cffi, API mode).

Nothing outside pydp should import ``lib``: public modules wrap every call
and pass its return code through :func:`check`.
"""

from __future__ import annotations

from .errors import from_errno

try:
    from ._pydp_cffi import ffi, lib  # type: ignore[import-not-found]
except ImportError as exc:  # pragma: no cover - build problem
    raise ImportError(
        "pydp's C core is not built: install with `pip install .` "
        f"(or an editable install) first ({exc})"
    ) from exc

__all__ = ["ffi", "lib", "check", "last_error", "cstr"]


def last_error() -> str:
    """Return the core's last error message for this thread."""
    return ffi.string(lib.pd_last_error()).decode("utf-8", "replace")


def check(rv: int) -> int:
    """Return ``rv`` if it is not negative, else raise the typed error."""
    if rv < 0:
        raise from_errno(-rv, last_error())
    return rv


def cstr(ptr) -> str:  # noqa: ANN001 - a cffi char pointer
    """Decode a C string, '' for NULL."""
    if ptr == ffi.NULL:
        return ""
    return ffi.string(ptr).decode("utf-8", "replace")
