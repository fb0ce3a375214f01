"""Counter snapshots: per port, per stage, per drop reason.

Counter names come from the C core: ``port/<name>/rx_packets``,
``port/<name>/drop/tx_full``, ``stage/<name>/in``,
``stage/<name>/drop/<reason>``, ``stage/<name>/<extra>`` and
``stage/<name>/cycles`` (TSC cycles spent in the stage, counted only while
the dataplane's stage_cycles switch is on; see :meth:`Stats.stage_cost`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


def _is_drop(name: str) -> bool:
    """True for 'port/<p>/drop/<reason>' and 'stage/<s>/drop/<reason>'."""
    parts = name.split("/")
    return len(parts) == 4 and parts[2] == "drop"


@dataclass
class Stats:
    """A summed snapshot of a pipeline's counters."""

    counters: dict[str, int]
    hw: dict[str, dict[str, int]] = field(default_factory=dict)
    elapsed: float = 0.0
    memory: str = ""

    def get(self, name: str) -> int:
        """One counter by its full name (0 if absent)."""
        return self.counters.get(name, 0)

    def ports(self) -> dict[str, dict[str, Any]]:
        """Per port: rx/tx packets and bytes, drops by reason, device counters."""
        out: dict[str, dict[str, Any]] = {}
        for k, v in self.counters.items():
            parts = k.split("/")
            if parts[0] != "port":
                continue
            p = out.setdefault(parts[1], {"drops": {}})
            if parts[2] == "drop":
                p["drops"][parts[3]] = v
            else:
                p[parts[2]] = v
        for name, hw in self.hw.items():
            if name in out:
                out[name]["missed"] = hw.get("imissed", 0)
                out[name]["errors"] = hw.get("ierrors", 0) + hw.get("oerrors", 0)
                out[name]["rx_nombuf"] = hw.get("rx_nombuf", 0)
        return out

    def stages(self) -> dict[str, dict[str, Any]]:
        """Per stage: packets in, drops by reason, extra counters, cycles."""
        out: dict[str, dict[str, Any]] = {}
        for k, v in self.counters.items():
            parts = k.split("/")
            if parts[0] != "stage":
                continue
            s = out.setdefault(parts[1], {"in": 0, "drops": {}, "cycles": 0})
            if parts[2] == "drop":
                s["drops"][parts[3]] = v
            else:
                s[parts[2]] = v
        return out

    def stage_cost(self, since: Stats | None = None) -> dict[str, float]:
        """Per stage: TSC cycles per packet in (0 for a stage that saw none).

        Cycles are only counted while stage_cycles is on, packets always: give
        ``since``, a snapshot taken after it was switched on, to divide the
        increments between the two snapshots instead of the totals.
        """
        prev = since.stages() if since is not None else {}
        out: dict[str, float] = {}
        for name, s in self.stages().items():
            p = prev.get(name, {})
            pkts = s["in"] - p.get("in", 0)
            cyc = s.get("cycles", 0) - p.get("cycles", 0)
            out[name] = round(cyc / pkts, 1) if pkts > 0 and cyc > 0 else 0.0
        return out

    def drops(self) -> dict[str, int]:
        """Every non-zero drop as 'stage-or-port/reason' -> count."""
        out = {}
        for k, v in self.counters.items():
            if _is_drop(k) and v:
                parts = k.split("/")
                out[f"{parts[1]}/{parts[3]}"] = v
        return out

    @property
    def rx(self) -> int:
        """Packets received on all ports (sources included)."""
        return sum(v for k, v in self.counters.items() if k.endswith("/rx_packets"))

    @property
    def tx(self) -> int:
        """Packets transmitted on all ports."""
        return sum(v for k, v in self.counters.items() if k.endswith("/tx_packets"))

    @property
    def dropped(self) -> int:
        """Packets dropped, all reasons."""
        return sum(v for k, v in self.counters.items() if _is_drop(k))

    @property
    def copies(self) -> int:
        """Extra packets made by mirror stages."""
        return sum(v for k, v in self.counters.items()
                   if k.startswith("stage/") and k.endswith("/copies"))

    def balanced(self) -> bool:
        """rx + mirror copies == tx + drops: every packet has a verdict."""
        return self.rx + self.copies == self.tx + self.dropped

    def to_dict(self) -> dict[str, Any]:
        """The JSON document ``pydp run --json`` prints."""
        return {
            "elapsed_s": round(self.elapsed, 3),
            "memory": self.memory,
            "totals": {"rx": self.rx, "tx": self.tx, "dropped": self.dropped,
                       "mirror_copies": self.copies, "balanced": self.balanced()},
            "ports": self.ports(),
            "stages": self.stages(),
            "drops": self.drops(),
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Stats:
        """Rebuild a snapshot from :meth:`to_dict` output (e.g. over the control socket)."""
        c: dict[str, int] = {}
        hw: dict[str, dict[str, int]] = {}
        for port, p in doc.get("ports", {}).items():
            for k, v in p.items():
                if k == "drops":
                    c.update({f"port/{port}/drop/{r}": n for r, n in v.items()})
                elif k in ("missed", "errors", "rx_nombuf"):
                    hw.setdefault(port, {})
                    hw[port][{"missed": "imissed", "errors": "ierrors"}.get(k, k)] = v
                else:
                    c[f"port/{port}/{k}"] = v
        for st, s in doc.get("stages", {}).items():
            for k, v in s.items():
                if k == "drops":
                    c.update({f"stage/{st}/drop/{r}": n for r, n in v.items()})
                else:
                    c[f"stage/{st}/{k}"] = v
        return cls(c, hw, doc.get("elapsed_s", 0.0), doc.get("memory", ""))

    def to_json(self) -> str:
        """:meth:`to_dict` as one JSON document."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def line(self, prev: Stats | None = None, dt: float = 1.0) -> str:
        """One status line: totals and rates since ``prev``."""
        rate = ""
        if prev is not None and dt > 0:
            rate = (f" | rx {(self.rx - prev.rx) / dt / 1e6:.3f} Mpps"
                    f" tx {(self.tx - prev.tx) / dt / 1e6:.3f} Mpps")
        return (f"[{self.elapsed:6.1f}s] rx {self.rx} tx {self.tx} dropped {self.dropped}"
                + rate)

    def summary(self) -> str:
        """A multi-line human summary: ports, stages, drop reasons."""
        lines = [f"memory: {self.memory}   elapsed: {self.elapsed:.2f} s",
                 f"total: rx {self.rx}  tx {self.tx}  dropped {self.dropped}"
                 + (f"  mirror copies {self.copies}" if self.copies else "")
                 + ("  (balanced)" if self.balanced() else "  (NOT balanced: in flight?)")]
        lines.append("ports:")
        for name, p in self.ports().items():
            d = ", ".join(f"{k} {v}" for k, v in p["drops"].items() if v) or "none"
            lines.append(f"  {name:<10} rx {p.get('rx_packets', 0):>12} tx "
                         f"{p.get('tx_packets', 0):>12} missed {p.get('missed', 0)} "
                         f"errors {p.get('errors', 0)} drops: {d}")
        lines.append("stages:")
        cost = self.stage_cost()
        for name, s in self.stages().items():
            d = ", ".join(f"{k} {v}" for k, v in s["drops"].items() if v) or "none"
            ext = "".join(f" {k} {v}" for k, v in s.items()
                          if k not in ("in", "drops", "cycles"))
            if s.get("cycles"):
                ext += f" cycles/pkt {cost[name]:.1f}"
            lines.append(f"  {name:<10} in {s['in']:>12}{ext} drops: {d}")
        return "\n".join(lines)
