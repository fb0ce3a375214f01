"""Key material that can be wiped, and that never shows itself.

SA keys live in :class:`KeyMaterial`: a bytearray that :meth:`KeyMaterial.wipe`
zeroes in place. Its ``repr``/``str`` say only how long it is. Intermediate
secrets that the ``cryptography`` API returns as immutable ``bytes`` (the
X25519 shared secret, HKDF output) are copied into KeyMaterial and the
``bytes`` object itself is zeroed with :func:`wipe_bytes`, so no copy of a key
outlives the SA in Python memory.
"""

from __future__ import annotations

import ctypes
import sys

# offset of the data inside a CPython bytes object (ob_sval)
_BYTES_DATA_OFFSET = sys.getsizeof(b"") - 1


def wipe_bytes(b: bytes) -> None:
    """Zero the buffer of a ``bytes`` object that nothing else shares (CPython only).

    Only for fresh secrets the caller owns (a KDF or ECDH output): bytes of
    length 0 or 1 are interned singletons and are left alone.
    """
    if not isinstance(b, bytes) or len(b) < 2 or sys.implementation.name != "cpython":
        return
    ctypes.memset(id(b) + _BYTES_DATA_OFFSET, 0, len(b))


class KeyMaterial:
    """A secret in a bytearray: ``bytes(km)`` to use it, :meth:`wipe` to zero it."""

    __slots__ = ("_buf",)

    def __init__(self, data: bytes | bytearray | memoryview, wipe_source: bool = False) -> None:
        """Copy ``data``; with ``wipe_source``, zero the caller's ``bytes`` afterwards."""
        self._buf = bytearray(data)
        if wipe_source:
            if isinstance(data, bytearray):
                data[:] = bytes(len(data))
            elif isinstance(data, bytes):
                wipe_bytes(data)

    def __len__(self) -> int:
        return len(self._buf)

    def __repr__(self) -> str:
        state = "wiped" if self.wiped else "hidden"
        return f"<key {len(self._buf)} bytes {state}>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyMaterial):
            return NotImplemented
        import hmac
        return hmac.compare_digest(self._buf, other._buf)

    __hash__ = None  # type: ignore[assignment]

    def buffer(self) -> bytearray:
        """The live buffer (zeroed by :meth:`wipe`): hand it to C, do not keep copies."""
        return self._buf

    def split(self, at: int) -> tuple[KeyMaterial, KeyMaterial]:
        """Two new KeyMaterials: bytes ``[:at]`` and ``[at:]`` (e.g. cipher key and salt)."""
        return KeyMaterial(self._buf[:at]), KeyMaterial(self._buf[at:])

    @property
    def wiped(self) -> bool:
        """True once zeroed (or when it was all zero)."""
        return not any(self._buf)

    def wipe(self) -> None:
        """Zero the buffer in place."""
        n = len(self._buf)
        if n:
            ctypes.memset((ctypes.c_char * n).from_buffer(self._buf), 0, n)

    def __del__(self) -> None:
        try:
            self.wipe()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass
