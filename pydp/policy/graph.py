"""Draw a policy: identities as nodes, allowed reach as edges, deny rules as dashed red edges.

:func:`to_dot` returns Graphviz DOT text. A solid green edge ``a -> b`` is
labelled with what ``a`` may send to ``b`` after deny rules and the default
(see :func:`pydp.policy.diff.reach`; ``(partial)`` when only some of their
addresses may). A dashed red edge is labelled with the ports deny rules cover
between them and the rules' names. External CIDR endpoints are drawn as notes.

:func:`render` runs Graphviz ``dot`` to write ``.png``, ``.svg`` or ``.pdf``
(``.dot`` writes the text itself).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..graphviz import render_dot
from .diff import Analysis, denials, reach
from .model import Policy

MAX_ADDRESSES = 4  # address lines shown in a node; the rest are counted
FORMATS = ("png", "svg", "pdf", "dot")


def _q(text: str) -> str:
    """A DOT quoted string (``\\n`` in ``text`` stays a DOT line break)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(policy: Policy) -> str:
    """The policy as a Graphviz digraph."""
    an = Analysis(policy)
    title = f"policy {policy.name or policy.source or ''}".strip()
    lines = [
        "digraph policy {",
        f"  graph [rankdir=LR, labelloc=t, fontname=Helvetica, "
        f"label={_q(f'{title} (default {policy.default})')}];",
        '  node [shape=box, style="rounded,filled", fillcolor="#eef4fb", fontname=Helvetica, '
        "fontsize=10];",
        "  edge [fontname=Helvetica, fontsize=9];",
    ]
    for ident in policy.identities:
        label = [ident.name]
        if ident.labels:
            label.append(", ".join(f"{k}={v}" for k, v in sorted(ident.labels.items())))
        addrs = [str(a) for a in ident.addresses]
        label += addrs[:MAX_ADDRESSES]
        if len(addrs) > MAX_ADDRESSES:
            label.append(f"(+{len(addrs) - MAX_ADDRESSES} more)")
        lines.append(f"  {_q(ident.name)} [label={_q(chr(10).join(label))}];")
    for name, kind in an.kind.items():
        if kind == "external" and name in an.endpoints:
            lines.append(f'  {_q(name)} [shape=note, style=filled, fillcolor="#fdf3e1", '
                         f"label={_q(name.replace(' except ', chr(10) + 'except '))}];")
    for r in reach(policy, an):
        label = str(r.ports) + (" (partial)" if r.partial else "")
        lines.append(f'  {_q(r.src)} -> {_q(r.dst)} [label={_q(label)}, color="#1a7f37", '
                     'fontcolor="#1a7f37"];')
    for src, dst, ports, names in denials(policy, an):
        label = f"deny {ports}\n({', '.join(names)})"
        lines.append(f"  {_q(src)} -> {_q(dst)} [label={_q(label)}, style=dashed, color=red, "
                     "fontcolor=red];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(policy: Policy, out_path: str | Path, fmt: str | None = None) -> Path:
    """Write the drawing to ``out_path`` (format from its suffix: png, svg, pdf or dot).

    Raises :class:`~pydp.errors.NotFound` naming Graphviz ``dot`` when it is not
    installed, and :class:`~pydp.errors.PydpError` with dot's message if it fails.
    """
    out = Path(out_path)
    fmt = (fmt or out.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise ConfigError(f"cannot render {out.name!r}: format {fmt!r} is not one of "
                         f"{', '.join(FORMATS)}")
    text = to_dot(policy)
    return render_dot(text, out, fmt)


__all__ = ["render", "to_dot"]
