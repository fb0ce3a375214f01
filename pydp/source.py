"""The template traffic source: scapy templates, per-packet variation in C.

As TRex does: Python builds the template packets once; the C core copies
them at full speed, stepping fields (addresses, ports) through ranges or
drawing them at random, and fixes the IPv4 and TCP/UDP checksums::

    from scapy.all import Ether, IP, UDP
    src = Source([Ether()/IP(src="10.0.0.1", dst="10.0.1.1")/UDP(sport=1000, dport=80)],
                 vary=[Vary("IP.src", "10.0.0.1", "10.0.39.16"), Vary("UDP.sport", 1000, 1999)],
                 count=1_000_000)
    dp = Dataplane(pipeline, ports={...}, sources={"in": src})
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._core import ffi
from .errors import InvalidArgument
from .ports import to_bytes

# field name -> (scapy layer name, field name, width in bytes)
_KNOWN = {
    "IP.src": ("IP", "src", 4), "IP.dst": ("IP", "dst", 4), "IP.id": ("IP", "id", 2),
    "IP.ttl": ("IP", "ttl", 1), "IP.tos": ("IP", "tos", 1),
    "UDP.sport": ("UDP", "sport", 2), "UDP.dport": ("UDP", "dport", 2),
    "TCP.sport": ("TCP", "sport", 2), "TCP.dport": ("TCP", "dport", 2),
    "TCP.seq": ("TCP", "seq", 4),
    "IPv6.src": ("IPv6", "src", 16), "IPv6.dst": ("IPv6", "dst", 16),
    "Dot1Q.vlan": ("Dot1Q", "vlan", 2),
}
# offset of a field inside its layer, width handled above
_FIELD_OFF = {("IP", "src"): 12, ("IP", "dst"): 16, ("IP", "id"): 4, ("IP", "ttl"): 8,
              ("IP", "tos"): 1, ("UDP", "sport"): 0, ("UDP", "dport"): 2,
              ("TCP", "sport"): 0, ("TCP", "dport"): 2, ("TCP", "seq"): 4,
              ("IPv6", "src"): 8 + 12, ("IPv6", "dst"): 24 + 12, ("Dot1Q", "vlan"): 0}


@dataclass
class Vary:
    """A field to vary: ``field`` like 'IP.src' or 'UDP.sport', over [lo, hi].

    Addresses may be given as strings. For IPv6 addresses the low 32 bits
    vary. ``step`` walks the range in order; ``random=True`` draws uniformly.
    ``template`` picks which template (default: every template that has it).
    """

    field: str
    lo: Any
    hi: Any
    step: int = 1
    random: bool = False
    template: int | None = None


def _as_int(v: Any, what: str) -> int:
    if isinstance(v, int):
        return v
    try:
        a = ipaddress.ip_address(v)
        return int(a) & 0xFFFFFFFF
    except ValueError:
        raise InvalidArgument(f"{what}: {v!r} is neither an integer nor an address") from None


def _layer_offset(pkt: Any, layer: str) -> int | None:
    raw = bytes(pkt)
    p = pkt
    while p is not None and p.__class__.__name__ != "NoPayload":
        if p.__class__.__name__ == layer:
            return len(raw) - len(bytes(p))
        p = p.payload
    return None


class Source:
    """Templates plus field variations, with an optional rate and count."""

    def __init__(self, templates: Sequence[Any], vary: Sequence[Vary] = (),
                 rate_pps: float = 0, count: int = 0) -> None:
        """``templates``: scapy packets (Ether first); ``rate_pps``/``count`` 0 = unlimited."""
        if not templates:
            raise InvalidArgument("source: templates: at least one packet is needed")
        if rate_pps < 0 or count < 0:
            raise InvalidArgument("source: rate_pps and count must not be negative")
        self.templates = list(templates)
        self.vary = list(vary)
        self.rate_pps = rate_pps
        self.count = int(count)
        self._build()

    def _build(self) -> None:
        datas, tmpls, vars_ = [], [], []
        for i, t in enumerate(self.templates):
            raw = to_bytes(t)
            if not 14 <= len(raw) <= 9000:
                raise InvalidArgument(f"source: template {i}: length {len(raw)} outside 14..9000")
            info = {"len": len(raw), "l3_off": 0, "l4_off": 0, "ip_ver": 0, "l4_proto": 0}
            if not isinstance(t, (bytes, bytearray, memoryview)):
                for ver, name in ((4, "IP"), (6, "IPv6")):
                    off = _layer_offset(t, name)
                    if off is not None:
                        info.update(l3_off=off, ip_ver=ver)
                        break
                for proto, name in ((6, "TCP"), (17, "UDP")):
                    off = _layer_offset(t, name)
                    if off is not None and info["l3_off"]:
                        info.update(l4_off=off, l4_proto=proto)
                        break
            datas.append(raw)
            tmpls.append(info)
        for v in self.vary:
            if v.field not in _KNOWN:
                raise InvalidArgument(f"source: vary field '{v.field}' is not one of "
                                      f"{', '.join(_KNOWN)}")
            layer, fname, width = _KNOWN[v.field]
            lo, hi = _as_int(v.lo, v.field), _as_int(v.hi, v.field)
            if lo > hi:
                raise InvalidArgument(f"source: vary {v.field}: lo {v.lo} is above hi {v.hi}")
            if v.step < 1:
                raise InvalidArgument(f"source: vary {v.field}: step must be >= 1")
            hit = False
            for i, t in enumerate(self.templates):
                if v.template is not None and v.template != i:
                    continue
                off = _layer_offset(t, layer) if not isinstance(t, bytes) else None
                if off is None:
                    continue
                w = 4 if width == 16 else width
                limit = (1 << (8 * w)) - 1
                if hi > limit:
                    raise InvalidArgument(f"source: vary {v.field}: hi {v.hi} does not fit "
                                          f"{w} bytes")
                vars_.append({"tmpl": i, "offset": off + _FIELD_OFF[(layer, fname)],
                              "width": w, "random": int(v.random), "min": lo, "max": hi,
                              "step": v.step})
                hit = True
            if not hit:
                raise InvalidArgument(f"source: vary {v.field}: no template has a "
                                      f"{layer} layer")
        self._data = b"".join(datas)
        self._tmpls = tmpls
        self._vars = vars_

    def attach(self, cp: Any, port_idx: int) -> None:
        """Install this source on pipeline port ``port_idx`` of C pipeline ``cp``."""
        from ._core import check, lib
        t = ffi.new("struct pd_source_tmpl[]", self._tmpls)
        v = ffi.new("struct pd_source_var[]", self._vars or 1)
        for i, d in enumerate(self._vars):
            for k, val in d.items():
                setattr(v[i], k, val)
        check(lib.pd_pipeline_set_source(cp, port_idx, ffi.from_buffer(self._data), t,
                                         len(self._tmpls), v, len(self._vars),
                                         int(self.rate_pps), self.count))
