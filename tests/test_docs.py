"""The documentation's commands are the CLI's: every `rerankrt …` line of a bash block in README.md and
docs/*.md is parsed by the real parser (its flags, their values and choices), and the cheap ones run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from rerankrt.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
#: commands that need no data, no artifacts and no time: these are run, not only parsed
RUN = {"info", "models"}


def commands() -> list[tuple[str, str]]:
    """(file, command) of every `rerankrt` line in a ```bash block, continuation lines joined."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                if words and words[0] == "rerankrt":
                    found.append((path.name, shlex.join(words[1:])))
    return found


def test_the_documentation_shows_commands():
    files = {f for f, _ in commands()}
    assert {"README.md", "search.md", "first-stage.md", "serving.md", "performance.md"} <= files


@pytest.mark.parametrize(("page", "command"), commands())
def test_every_documented_command_parses(page, command, capsys):
    args = shlex.split(command)
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit as e:
        pytest.fail(f"{page}: `rerankrt {command}` does not parse: {capsys.readouterr().err.strip()} ({e})")
    if parsed.command in RUN:
        assert main(args) == 0
