"""Render DOT text with Graphviz: the one place pydp runs ``dot``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .errors import NotFound, PydpError


def render_dot(text: str, out: Path, fmt: str) -> Path:
    """Write ``text`` to ``out`` as DOT (``fmt == 'dot'``) or through ``dot -T<fmt>``.

    Raises :class:`~pydp.errors.NotFound` naming Graphviz ``dot`` when it is not
    installed, and :class:`~pydp.errors.PydpError` with dot's message if it fails.
    """
    if fmt == "dot":
        out.write_text(text, encoding="utf-8")
        return out
    dot = shutil.which("dot")
    if dot is None:
        raise NotFound("Graphviz 'dot' is not installed (or not on PATH); install the "
                       "'graphviz' package (apt-get install graphviz) to render "
                       f"{out.name}, or write a .dot file instead")
    try:
        r = subprocess.run([dot, f"-T{fmt}", "-o", str(out)], input=text, text=True,
                           capture_output=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        raise PydpError(f"Graphviz 'dot' took over 120 s to render {out.name}") from None
    if r.returncode != 0:
        raise PydpError(f"Graphviz 'dot' failed ({r.returncode}) rendering {out.name}: "
                        f"{r.stderr.strip()}")
    return out
