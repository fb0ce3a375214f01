"""Draw a pipeline: ports, stages and their edges, optionally with live packet counts.

:func:`to_dot` returns Graphviz DOT text, laid out left to right. Every polled
port is an ``<port> (rx)`` box on the left, feeding the stage its input map
names; every port a stage transmits on is a ``<port> (tx)`` box on the right.
Stages are records showing name and type. Stage-to-stage edges are labelled
with the edge name when it is not ``next``; forward, mirror (dashed: a copy)
and l3route (labelled with the next-hop names) edges end at tx ports. Each
stage whose type counts drop reasons gets its own red ``drop`` sink.

With ``stats`` (a :meth:`pydp.stats.Stats.to_dict` document, e.g. from a
running dataplane's control socket) the edges carry packet counts: port
``rx_packets`` on input edges, ``stage/<s>/in`` on the edge into a stage with
exactly one predecessor (otherwise ``in N`` is shown in the stage's box),
port ``tx_packets`` on the edge into a tx port with exactly one incoming edge
(otherwise ``tx N`` in the port's box), and the non-zero drop counts by reason
on the drop edges.

:func:`render` writes ``.dot`` text itself, or runs Graphviz ``dot`` for
``.png`` and ``.svg``. :func:`cli_graph` is the body of ``pydp graph``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import InvalidArgument, PydpError
from .graphviz import render_dot
from .pipeline import Pipeline
from .stages import Stage, stage_drops

FORMATS = ("dot", "png", "svg")

_FILL = {
    "parse": "#eef4fb", "forward": "#e8f5e9", "l3route": "#e8f5e9", "mirror": "#fff8e1",
    "count": "#f3e5f5", "drop": "#fdecea", "policy": "#fff3e0", "conntrack": "#e0f2f1",
}


def _q(text: str) -> str:
    """A DOT quoted string; a newline in ``text`` becomes a DOT line break."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _rec(*fields: str) -> str:
    """A quoted record label whose fields are ``fields`` (record specials escaped)."""
    out = []
    for f in fields:
        f = f.replace("\\", "\\\\")
        for c in "{}|<>":
            f = f.replace(c, "\\" + c)
        out.append(f.replace('"', '\\"').replace("\n", "\\n"))
    return '"' + "|".join(out) + '"'


def _attrs(**kw: Any) -> str:
    """``[k=v, ...]`` with string values quoted (``None`` values left out)."""
    parts = []
    for k, v in kw.items():
        if v is None:
            continue
        parts.append(f"{k}={v if isinstance(v, _Raw) else _q(str(v))}")
    return " [" + ", ".join(parts) + "]" if parts else ""


class _Raw(str):
    """An attribute value that is already DOT (a record label...)."""


def _count(n: Any) -> str:
    """A packet count, grouped by thousands."""
    return f"{n:,}" if isinstance(n, int) else str(n)


def _tx_targets(st: Stage) -> list[tuple[str, str, bool]]:
    """The ports ``st`` transmits on: (port, label, is_copy), one per port."""
    if st.TYPE in ("forward", "mirror") and getattr(st, "port", ""):
        return [(st.port, "copy" if st.TYPE == "mirror" else "",  # type: ignore[attr-defined]
                 st.TYPE == "mirror")]
    if st.TYPE == "l3route":
        by_port: dict[str, list[str]] = {}
        for nh in getattr(st, "nexthops", []):
            by_port.setdefault(nh.port, []).append(nh.name)
        return [(p, ", ".join(names), False) for p, names in by_port.items()]
    return []


def _label(*lines: str) -> str:
    """Join the non-empty lines."""
    return "\n".join(x for x in lines if x)


def to_dot(pipeline: Pipeline, stats: dict[str, Any] | None = None) -> str:
    """The pipeline as a left-to-right Graphviz digraph, with counts from ``stats`` if given.

    ``stats`` is a :meth:`pydp.stats.Stats.to_dict` document; counters it lacks
    are shown as 0.
    """
    live = stats is not None
    ports_st: dict[str, dict[str, Any]] = (stats or {}).get("ports", {}) or {}
    stages_st: dict[str, dict[str, Any]] = (stats or {}).get("stages", {}) or {}

    def port_n(port: str, key: str) -> int:
        return int(ports_st.get(port, {}).get(key, 0) or 0)

    def stage_in(name: str) -> int:
        return int(stages_st.get(name, {}).get("in", 0) or 0)

    stages = pipeline.order()
    inputs = pipeline.input_map()
    # predecessors of each stage: ("port", p) or ("stage", s), distinct
    preds: dict[str, list[tuple[str, str]]] = {s.name: [] for s in stages}
    for port, target in inputs.items():
        preds[target].append(("port", port))
    stage_edges: list[tuple[str, str, list[str]]] = []  # (src, dst, edge names)
    for st in stages:
        grouped: dict[str, list[str]] = {}
        for edge, target in st.edges().items():
            grouped.setdefault(target, []).append(edge)
        for target, names in grouped.items():
            stage_edges.append((st.name, target, names))
            preds[target].append(("stage", st.name))
    tx_edges: list[tuple[str, str, str, bool]] = []  # (stage, port, label, is_copy)
    for st in stages:
        for port, lab, copy in _tx_targets(st):
            tx_edges.append((st.name, port, lab, copy))
    tx_in: dict[str, int] = {}
    for _, port, _, _ in tx_edges:
        tx_in[port] = tx_in.get(port, 0) + 1

    def in_on_edge(name: str) -> bool:
        """The stage's in count is drawn on its one incoming stage edge."""
        p = preds[name]
        return len(p) == 1 and p[0][0] == "stage"

    title = f"pipeline {pipeline.name}"
    if pipeline.description:
        title += f"\n{pipeline.description}"
    if live:
        tot = (stats or {}).get("totals", {}) or {}
        if tot:
            title += (f"\nrx {_count(tot.get('rx', 0))}  tx {_count(tot.get('tx', 0))}  "
                      f"dropped {_count(tot.get('dropped', 0))}")
    lines = [
        f"digraph {_q(pipeline.name)} {{",
        f"  graph [rankdir=LR, labelloc=t, fontname=Helvetica, nodesep=0.4, ranksep=0.6, "
        f"label={_q(title)}];",
        "  node [fontname=Helvetica, fontsize=10];",
        "  edge [fontname=Helvetica, fontsize=9];",
    ]

    # ports: rx on the left, tx on the right; a port neither polled nor sent to is
    # still drawn (unused) so that every port appears
    rx_ports = [p for p in pipeline.ports if p in inputs]
    tx_ports = [p for p in pipeline.ports if p in tx_in]
    lines.append("  { rank=source;")
    for p in rx_ports:
        lab = _label(f"{p} (rx)")
        lines.append(f"    {_q('rx/' + p)}"
                     + _attrs(label=lab, shape="box", style="filled", fillcolor="#dbe9f6") + ";")
    lines.append("  }")
    lines.append("  { rank=sink;")
    for p in tx_ports:
        extra = []
        if live and tx_in[p] != 1:
            extra.append(f"tx {_count(port_n(p, 'tx_packets'))}")
        if live:
            drops = ports_st.get(p, {}).get("drops", {}) or {}
            extra += [f"drop {r} {_count(n)}" for r, n in drops.items() if n]
        lab = _label(f"{p} (tx)", *extra)
        lines.append(f"    {_q('tx/' + p)}"
                     + _attrs(label=lab, shape="box", style="filled", fillcolor="#dbe9f6") + ";")
    lines.append("  }")
    for p in pipeline.ports:
        if p not in inputs and p not in tx_in:
            lines.append(f"  {_q('port/' + p)}"
                         + _attrs(label=f"{p} (unused)", shape="box", style="dashed") + ";")

    # stages
    for st in stages:
        fields = [st.name, st.TYPE]
        if live and not in_on_edge(st.name):
            fields.append(f"in {_count(stage_in(st.name))}")
        if live:
            extra = {k: v for k, v in stages_st.get(st.name, {}).items()
                     if k not in ("in", "drops") and isinstance(v, int) and v}
            fields += [f"{k} {_count(v)}" for k, v in extra.items()]
        lines.append(f"  {_q('stage/' + st.name)}"
                     + _attrs(label=_Raw(_rec(*fields)), shape="record", style="filled",
                              fillcolor=_FILL.get(st.TYPE, "#f5f5f5"),
                              tooltip=f"{st.name} ({st.TYPE})") + ";")
    drop_reasons = {st.name: stage_drops(st.TYPE) for st in stages}
    for st in stages:
        if drop_reasons[st.name]:
            lines.append(f"  {_q('drop/' + st.name)}"
                         + _attrs(label="drop", shape="octagon", style="filled",
                                  fillcolor="#fdecea", color="#c62828", fontcolor="#c62828",
                                  fontsize="8", margin="0.02",
                                  tooltip=f"{st.name} drops: "
                                          + ", ".join(drop_reasons[st.name])) + ";")

    # edges: ports -> first stages
    for port, target in inputs.items():
        lab = _count(port_n(port, "rx_packets")) if live else None
        lines.append(f"  {_q('rx/' + port)} -> {_q('stage/' + target)}"
                     + _attrs(label=lab, color="#1f5f99") + ";")
    # stage -> stage
    for src, dst, names in stage_edges:
        name = ", ".join(names) if names != ["next"] else ""
        cnt = _count(stage_in(dst)) if live and in_on_edge(dst) else ""
        lab = _label(name, cnt) or None
        lines.append(f"  {_q('stage/' + src)} -> {_q('stage/' + dst)}"
                     + _attrs(label=lab) + ";")
    # stage -> tx port
    for src, port, name, copy in tx_edges:
        cnt = _count(port_n(port, "tx_packets")) if live and tx_in[port] == 1 else ""
        lab = _label(name, cnt) or None
        lines.append(f"  {_q('stage/' + src)} -> {_q('tx/' + port)}"
                     + _attrs(label=lab, style="dashed" if copy else None,
                              color="#2e7d32") + ";")
    # stage -> its drop sink
    for st in stages:
        if not drop_reasons[st.name]:
            continue
        lab = None
        if live:
            drops = stages_st.get(st.name, {}).get("drops", {}) or {}
            lab = _label(*(f"{r} {_count(n)}" for r, n in drops.items() if n)) or None
        lines.append(f"  {_q('stage/' + st.name)} -> {_q('drop/' + st.name)}"
                     + _attrs(label=lab, color="#c62828", fontcolor="#c62828",
                              arrowsize="0.6") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(pipeline: Pipeline, out_path: str | Path,
           stats: dict[str, Any] | None = None) -> Path:
    """Write the drawing to ``out_path``; the format comes from its suffix (dot, png, svg).

    Raises :class:`~pydp.errors.InvalidArgument` for another suffix,
    :class:`~pydp.errors.NotFound` naming Graphviz ``dot`` when it is not
    installed, and :class:`~pydp.errors.PydpError` with dot's message if it fails.
    """
    out = Path(out_path)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise InvalidArgument(f"cannot render {out.name!r}: the file name must end in "
                              f"{', '.join('.' + f for f in FORMATS)}")
    text = to_dot(pipeline, stats)
    return render_dot(text, out, fmt)


def cli_graph(pipeline_file: str, output: str, control: str | None) -> str:
    """Body of ``pydp graph``: draw ``pipeline_file`` to ``output``; return a message line.

    With ``control`` (a control socket path) the edges carry the live counts of
    the dataplane running there (``stats`` command). Stage names in the counts
    that the file does not define are reported in the message, since the
    socket may belong to a dataplane running another pipeline.
    """
    pl = Pipeline.load(pipeline_file)
    stats = None
    if control is not None:
        from . import control as ctl
        stats = ctl.call("stats", control)
        if not isinstance(stats, dict):
            raise PydpError(f"{control}: 'stats' returned {type(stats).__name__}, "
                            "not a counters document")
    out = render(pl, output, stats)
    msg = (f"wrote {out} (pipeline {pl.name}: {len(pl.stages)} stages, "
           f"{len(pl.ports)} ports")
    if stats is not None:
        msg += f", live counts from {control}"
        unknown = sorted(set(stats.get("stages", {}) or {}) - set(pl.stage_names()))
        if unknown:
            msg += f"; warning: the dataplane has stages not in this file: {', '.join(unknown)}"
    return msg + ")"


__all__ = ["cli_graph", "render", "to_dot"]
