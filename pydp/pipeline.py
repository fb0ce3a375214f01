"""Pipelines: a validated graph of named stages over named ports.

Built from YAML (:meth:`Pipeline.load`) or from Python::

    from pydp import Pipeline
    from pydp.stages import Parse, Forward
    pl = Pipeline("forward", ports=["in", "out"], inputs={"in": "parse"},
                  stages=[Parse("parse", next="fwd"), Forward("fwd", port="out")])

Both paths end in the same constructor and the same :meth:`validate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from . import yamlsrc
from .errors import ConfigError
from .stages import STAGE_TYPES, Stage, check_name, stage_from_dict

TOP_KEYS = ("name", "description", "ports", "inputs", "stages")


class Pipeline:
    """A named graph of stages; ports are names bound to devices at run time."""

    def __init__(self, name: str, ports: Iterable[str], stages: Iterable[Stage],
                 inputs: dict[str, str] | None = None, description: str = "") -> None:
        """Create and validate; raises ConfigError naming the bad field."""
        self.name = name
        self.description = description
        self.ports = list(ports)
        self.stages = list(stages)
        # anything but a mapping is kept as given: validate() names 'inputs'
        self.inputs = dict(inputs) if isinstance(inputs, Mapping) else inputs
        self.source: str | None = None
        self.validate()

    # -- structure ----------------------------------------------------------------
    def stage_names(self) -> list[str]:
        """Names of the stages, in definition order."""
        return [s.name for s in self.stages]

    def stage(self, name: str) -> Stage:
        """The stage called ``name``."""
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(f"pipeline '{self.name}' has no stage '{name}'", key=name)

    def input_map(self) -> dict[str, str]:
        """Which stage each polled port feeds (default: every port feeds the first stage)."""
        if self.inputs is None:
            return {p: self.stages[0].name for p in self.ports}
        return dict(self.inputs)

    def order(self) -> list[Stage]:
        """The stages in topological order (every edge points forward)."""
        names = self.stage_names()
        indeg = dict.fromkeys(names, 0)
        for s in self.stages:
            for t in set(s.edges().values()):
                indeg[t] += 1
        ready = [n for n in names if indeg[n] == 0]
        out: list[str] = []
        while ready:
            n = ready.pop(0)
            out.append(n)
            for t in sorted(set(self.stage(n).edges().values()), key=names.index):
                indeg[t] -= 1
                if indeg[t] == 0:
                    ready.append(t)
        if len(out) != len(names):
            loop = [n for n in names if n not in out]
            raise ConfigError(f"pipeline '{self.name}': the stages {', '.join(loop)} form a "
                              "loop; a pipeline must be acyclic", key="stages")
        return [self.stage(n) for n in out]

    # -- validation ---------------------------------------------------------------------
    def validate(self) -> None:
        """Check names, references, acyclicity and stage prerequisites."""
        check_name(self.name, "name")
        if not isinstance(self.description, str):
            raise ConfigError("description must be a string", key="description")
        if not self.ports:
            raise ConfigError(f"pipeline '{self.name}' needs at least one port", key="ports")
        for p in self.ports:
            check_name(p, "ports")
        dup = {p for p in self.ports if self.ports.count(p) > 1}
        if dup:
            raise ConfigError(f"port '{sorted(dup)[0]}' is listed twice", key="ports")
        if not self.stages:
            raise ConfigError(f"pipeline '{self.name}' needs at least one stage", key="stages")
        names = self.stage_names()
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            e = ConfigError(f"stage name '{sorted(dup)[0]}' is used twice", key="name",
                            path=("name",))
            e.stage = sorted(dup)[0]  # the error points at the later definition
            raise e
        for s in self.stages:
            if not isinstance(s, Stage):
                raise ConfigError(f"{s!r} is not a stage", key="stages")
            try:
                s.validate(self)
            except ConfigError as e:
                e.stage = s.name
                raise
        if self.inputs is not None:
            if not isinstance(self.inputs, dict) or not self.inputs:
                raise ConfigError("inputs must map port names to stage names", key="inputs")
            for port, st in self.inputs.items():
                if port not in self.ports:
                    raise ConfigError(f"inputs: no port named '{port}'", key="inputs")
                if st not in names:
                    raise ConfigError(f"inputs: {port}: no stage named '{st}'", key="inputs")
        self.order()
        self._check_parse_first()

    def _check_parse_first(self) -> None:
        """Stages that read headers (l3route...) must be reached only through parse."""
        for port, start in self.input_map().items():
            todo, seen = [start], set()
            while todo:
                n = todo.pop()
                if n in seen:
                    continue
                seen.add(n)
                st = self.stage(n)
                if st.TYPE == "parse":
                    continue
                if st.NEEDS_PARSE:
                    raise ConfigError(
                        f"stage '{n}' ({st.TYPE}) reads packet headers but packets from "
                        f"port '{port}' can reach it without a parse stage", key="stages")
                todo.extend(st.edges().values())

    # -- YAML ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> Pipeline:
        """Load and validate a pipeline file; errors name the file, line and key."""
        data = yamlsrc.load(path)
        pl = cls.from_data(data, str(path))
        pl.source = str(path)
        # files a stage names (a policy file...) are relative to the pipeline file
        for st in pl.stages:
            st.base_dir = str(Path(path).parent)  # type: ignore[attr-defined]
        return pl

    @classmethod
    def loads(cls, text: str, name: str = "<string>") -> Pipeline:
        """Load a pipeline from YAML text."""
        return cls.from_data(yamlsrc.loads(text, name), name)

    @classmethod
    def from_data(cls, data: Any, file: str = "<data>") -> Pipeline:
        """Build from loaded YAML data (LocDict gives line numbers)."""
        def err(msg: str, node: Any = None, key: str | None = None) -> ConfigError:
            line = None
            if isinstance(node, yamlsrc.LocDict):
                line = node.line_of(key) if key else node.line
            elif isinstance(node, yamlsrc.LocList):
                line = node.line
            return ConfigError(msg, file=file, line=line, key=key)

        if not isinstance(data, dict):
            raise err("a pipeline file must be a mapping with name, ports and stages", data)
        for k in data:
            if k not in TOP_KEYS:
                raise err(f"unknown key '{k}' (allowed: {', '.join(TOP_KEYS)})", data, k)
        for k in ("name", "ports", "stages"):
            if k not in data:
                raise err(f"missing key '{k}'", data)
        if not isinstance(data["ports"], list):
            raise err("ports must be a list of names", data, "ports")
        if not isinstance(data["stages"], list):
            raise err("stages must be a list", data, "stages")
        stages: list[Stage] = []
        by_name: dict[str, Any] = {}
        for i, sd in enumerate(data["stages"]):
            if not isinstance(sd, dict):
                raise ConfigError("a stage must be a mapping with 'name' and 'type'", file=file,
                                  line=data["stages"].line_of(i), key="stages")
            try:
                st = stage_from_dict(sd)
            except ConfigError as e:
                raise _located(e, file, sd) from None
            stages.append(st)
            by_name[st.name] = sd
        inputs = data.get("inputs")
        try:
            return cls(data["name"], data["ports"], stages, inputs, data.get("description", ""))
        except ConfigError as e:
            if e.stage in by_name:
                raise _located(e, file, by_name[e.stage]) from None
            key = e.key if e.key in data else None
            raise err(e.message, data, key) from None

    def to_dict(self) -> dict[str, Any]:
        """The pipeline as YAML-ready data."""
        d: dict[str, Any] = {"name": self.name}
        if self.description:
            d["description"] = self.description
        d["ports"] = list(self.ports)
        if self.inputs is not None:
            d["inputs"] = dict(self.inputs)
        d["stages"] = [dict(name=s.name, **{k: v for k, v in s.to_dict().items()
                                            if k != "name"}) for s in self.stages]
        return d

    def to_yaml(self) -> str:
        """The pipeline as YAML text (loads back to an equal pipeline)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pipeline) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, ports={self.ports}, stages={self.stage_names()})"

    def describe(self) -> str:
        """A one-screen text picture: inputs and edges."""
        lines = [f"pipeline {self.name}: ports {', '.join(self.ports)}"]
        for port, st in self.input_map().items():
            lines.append(f"  {port} -> {st}")
        for s in self.order():
            targets = ", ".join(f"{e}={t}" for e, t in s.edges().items())
            extra = ""
            if getattr(s, "port", None):
                extra = f" port={s.port}"  # type: ignore[attr-defined]
            lines.append(f"  [{s.TYPE}] {s.name}{extra}" + (f" -> {targets}" if targets else ""))
        return "\n".join(lines)


def _located(e: ConfigError, file: str, node: Any) -> ConfigError:
    """Re-raise ``e`` with the line of its path (or key) inside stage mapping ``node``."""
    line = getattr(node, "line", None)
    path = e.path or ((e.key,) if e.key else ())
    for step in path:
        if isinstance(node, yamlsrc.LocDict) and step in node:
            line, node = node.line_of(step), node[step]
        elif isinstance(node, yamlsrc.LocList) and isinstance(step, int) and step < len(node):
            line, node = node.line_of(step), node[step]
        else:
            break
    out = ConfigError(e.message, file=file, line=line, key=e.key, path=e.path)
    out.stage = e.stage
    return out


__all__ = ["Pipeline", "STAGE_TYPES"]
