"""Policy operations on a running dataplane: apply, diff, show, stats.

One function per action. The control socket (``pydp run`` registers
:meth:`PolicyService.register`) and the CLI (``pydp policy ...``) call the
same functions, so a policy change from another process is validated,
compiled and published exactly as one from Python.
"""

from __future__ import annotations

from typing import Any

from .. import acl
from ..errors import ConfigError, InvalidArgument
from .compile import compile_policy_array
from .diff import diff
from .model import Policy


class PolicyService:
    """The live policy of each policy stage of one :class:`pydp.Dataplane`."""

    def __init__(self, dp: Any) -> None:
        """Find the policy stages; load the policy file each one names."""
        self.dp = dp
        self.stages = [s.name for s in dp.pipeline.stages if s.TYPE == "policy"]
        self.current: dict[str, Policy | None] = {}
        self.hits_base: dict[str, dict[str, tuple[int, int]]] = {}
        for name in self.stages:
            path = dp.pipeline.stage(name).policy_path()
            self.current[name] = Policy.load(path) if path else None
            self.hits_base[name] = {}

    def _stage(self, stage: str | None) -> str:
        if not self.stages:
            raise InvalidArgument(f"pipeline '{self.dp.pipeline.name}' has no policy stage")
        if stage is None:
            if len(self.stages) > 1:
                raise InvalidArgument(f"several policy stages ({', '.join(self.stages)}): "
                                      "name one with --stage")
            return self.stages[0]
        if stage not in self.stages:
            raise InvalidArgument(f"no policy stage '{stage}' (policy stages: "
                                  f"{', '.join(self.stages)})")
        return stage

    def diff(self, text: str, name: str = "<policy>", stage: str | None = None) -> dict:
        """Dry run: what ``text`` (a policy YAML) would change against the live policy."""
        st = self._stage(stage)
        new = Policy.loads(text, name)
        compile_policy_array(new)  # must compile too, or apply would fail
        old = self.current[st] or Policy.loads("rules: []\n", "<empty>")
        d = diff(old, new)
        return {"stage": st, "diff": d.to_dict(), "text": d.format()}

    def apply(self, text: str, name: str = "<policy>", stage: str | None = None) -> dict:
        """Validate, compile and publish ``text``; the old policy stays on any error."""
        st = self._stage(stage)
        new = Policy.loads(text, name)
        rules, n_ids = compile_policy_array(new)
        old = self.current[st]
        base = self._hits(st)  # carry rule hit counters over by rule name
        seconds = acl.commit(self.dp, st, rules, n_ids, new.default == "allow")
        self.hits_base[st] = base
        self.current[st] = new
        d = diff(old, new) if old is not None else None
        inf = acl.info(self.dp, st)
        text = d.format() if d else f"applied {len(new.rules)} rules"
        if inf["flows_revoked"]:
            text += (f"\n{inf['flows_revoked']} of {inf['flows_revalidated']} established "
                     "flows no longer allowed: cut (drop reason 'revoked')")
        return {"stage": st, "rules": len(new.rules), "acl_rules": len(rules),
                "acl_merged": inf["n_acl"], "seconds": seconds,
                "flows_revalidated": inf["flows_revalidated"],
                "flows_revoked": inf["flows_revoked"],
                "diff": d.to_dict() if d else None, "text": text}

    def show(self, stage: str | None = None) -> dict:
        """The live policy as YAML text."""
        st = self._stage(stage)
        pol = self.current[st]
        return {"stage": st, "yaml": pol.to_yaml() if pol else "# no policy (default deny)\n"}

    def _hits(self, st: str) -> dict[str, tuple[int, int]]:
        pol = self.current[st]
        out = dict(self.hits_base[st])
        if pol is None:
            return out
        names = [r.name for r in pol.rules] + ["(default allow)"]
        pkts, nbytes = acl.counters(self.dp, st, len(names))
        for i, n in enumerate(names):
            p0, b0 = out.get(n, (0, 0))
            out[n] = (p0 + int(pkts[i]), b0 + int(nbytes[i]))
        return out

    def stats(self, stage: str | None = None) -> dict:
        """Hit counters per rule (packets, bytes), kept across applies by rule name."""
        st = self._stage(stage)
        pol = self.current[st]
        hits = self._hits(st)
        live = [r.name for r in pol.rules] if pol else []
        return {"stage": st, "rules": [
            {"rule": n, "action": next((r.action for r in pol.rules if r.name == n), "")
             if pol else "", "packets": hits.get(n, (0, 0))[0],
             "bytes": hits.get(n, (0, 0))[1]} for n in live],
            "drops": {k: v for k, v in self.dp.stats().stages().get(st, {}).get(
                "drops", {}).items()}}

    def register(self, server: Any) -> None:
        """Serve policy.apply / policy.diff / policy.show / policy.stats on a ControlServer."""
        server.register("policy.apply", self.apply)
        server.register("policy.diff", self.diff)
        server.register("policy.show", self.show)
        server.register("policy.stats", self.stats)


def read_policy_text(path: str) -> tuple[str, str]:
    """Read a policy file for sending over the socket (validated locally first)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=path) from None
    Policy.loads(text, path)
    return text, path
