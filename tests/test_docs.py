"""The documentation says what the code does: README commands and flags exist, the stage
table of pipelines/README.md lists each stage type's real drop reasons."""

from __future__ import annotations

import re
import shlex

import click
import pytest
from conftest import PIPELINES, ROOT

from pydp.cli import main
from pydp.stages import stage_drops

TABLE_ROW = re.compile(r"^\| `(\w+)` \|.*\| ([^|]*) \|$")


def _doc_drops(cell: str) -> set[str]:
    cell = re.sub(r"\(extra counters:[^)]*\)", "", cell)
    cell = re.sub(r"\([^)]*\)", "", cell)  # explanations of a reason
    return {w.strip() for w in cell.split(",") if w.strip() and w.strip() != "(terminal)"}


def test_stage_table_drop_reasons_match_the_core():
    rows = {}
    for line in (PIPELINES / "README.md").read_text().splitlines():
        m = TABLE_ROW.match(line)
        if m and m.group(1) != "type":
            rows[m.group(1)] = _doc_drops(m.group(2))
    assert len(rows) >= 10, rows
    for typ, documented in rows.items():
        assert documented == set(stage_drops(typ)), typ


def _readme_commands() -> list[list[str]]:
    """Every `pydp ...` command line in the README's indented code blocks."""
    cmds = []
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("pydp "):
            continue
        line = re.split(r"\s#\s", line)[0].split("; pydp ")[0]
        cmds.append(shlex.split(line.replace("|", " ").replace("...", "")))
    return cmds


def _resolve(words: list[str]) -> tuple[click.Command, list[str]]:
    cmd: click.Command = main
    rest = words[1:]
    while isinstance(cmd, click.Group) and rest and rest[0] in cmd.commands:
        cmd, rest = cmd.commands[rest[0]], rest[1:]
    return cmd, rest


README_CMDS = _readme_commands()


def test_readme_has_commands():
    assert len(README_CMDS) >= 25


@pytest.mark.parametrize("words", README_CMDS, ids=[" ".join(w)[:60] for w in README_CMDS])
def test_readme_command_and_flags_exist(words):
    cmd, rest = _resolve(words)
    assert not isinstance(cmd, click.Group) or not rest, f"no command {words}"
    flags = {o for p in cmd.params
             for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
    for w in rest:
        w = w.strip("[]")
        if w.startswith("-"):
            assert w.split("=")[0] in flags, f"{' '.join(words)}: {w} is not a flag of " \
                                             f"{cmd.name} ({sorted(flags)})"
