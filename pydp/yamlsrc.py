"""YAML loading that remembers where each value came from.

Mappings load as :class:`LocDict` and sequences as :class:`LocList`; both
know the line of each key or item, so a validation error can name the file,
the line and the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


class LocDict(dict):
    """A dict that knows the 1-based line of itself and of each key."""

    line: int = 0
    lines: dict[str, int]

    def line_of(self, key: str) -> int:
        """Line where ``key`` is written (the mapping's own line if absent)."""
        return self.lines.get(key, self.line) if hasattr(self, "lines") else self.line


class LocList(list):
    """A list that knows the 1-based line of itself and of each item."""

    line: int = 0
    lines: list[int]

    def line_of(self, i: int) -> int:
        """Line where item ``i`` starts."""
        return self.lines[i] if hasattr(self, "lines") and i < len(self.lines) else self.line


class _Loader(yaml.SafeLoader):
    pass


def _map(loader: _Loader, node: yaml.MappingNode) -> LocDict:
    d = LocDict()
    d.line = node.start_mark.line + 1
    d.lines = {}
    for knode, vnode in node.value:
        key = loader.construct_object(knode, deep=True)
        if not isinstance(key, str):
            raise ConfigError(f"key {key!r} is not a string", line=knode.start_mark.line + 1)
        if key in d:
            raise ConfigError(f"duplicate key '{key}'", line=knode.start_mark.line + 1, key=key)
        d[key] = loader.construct_object(vnode, deep=True)
        d.lines[key] = knode.start_mark.line + 1
    return d


def _seq(loader: _Loader, node: yaml.SequenceNode) -> LocList:
    lst = LocList(loader.construct_object(n, deep=True) for n in node.value)
    lst.line = node.start_mark.line + 1
    lst.lines = [n.start_mark.line + 1 for n in node.value]
    return lst


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _seq)


def load(path: str | Path) -> Any:
    """Load a YAML file; syntax errors become ConfigError with file and line."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=path) from None
    return loads(text, path)


def loads(text: str, name: str = "<string>") -> Any:
    """Load YAML text; ``name`` is used in error messages."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except ConfigError as e:
        raise ConfigError(str(e), file=name, line=e.line, key=e.key) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(f"YAML syntax: {e.problem or e.context}", file=name, line=line) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"YAML: {e}", file=name) from None
