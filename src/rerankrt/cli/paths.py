"""Every path-valued command-line flag declared as what the command reads or what it writes.

"An output is never an input" is checked from these declarations, so it cannot drift from the parser:
`Flags(parser)` adds a sub-command's flags as inputs (`input`), outputs (`output`) or plain values
(`value`, strings that are no path), and `check(args)` refuses, before the command runs and even with
`--force`, an output that is an input of the run or a folder holding one. The test suite walks every
sub-command and fails on a string-valued flag declared as none of the three.

A flag may stand for paths other than its own value (`files=`: a dataset folder is its descriptor
files, `--nn` a file inside `--data`). An output is either replaced as a whole (a file, a store, a
repository: checked here) or a folder written into (`whole=False`: export's, extract's, bench's `--out`),
where the command checks the files it writes with `inputs(args)`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from rerankrt.core.atomic import check_outputs

ROLES = ("input", "output", "value")


@dataclass(frozen=True)
class PathFlag:
    action: argparse.Action
    role: str  #: "input" or "output"
    #: the paths it stands for, when not its own value (a dataset folder's files, a name inside --data)
    files: Callable[[argparse.Namespace], Iterable[str | Path | None]] | None = None
    whole: bool = True  #: an output replaced as a whole (not a folder written into)

    @property
    def flag(self) -> str:
        return self.action.option_strings[0] if self.action.option_strings else self.action.dest

    def paths(self, args: argparse.Namespace) -> list[Path]:
        if self.files is not None:
            return [Path(p) for p in self.files(args) if p]
        value = getattr(args, self.action.dest, None)
        values = value if isinstance(value, list) else [value]
        return [Path(v) for v in values if v]


class Flags:
    """A sub-command's flags, each declared by its role; `set_defaults(paths=…)` carries them to `main`."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser
        self.declared: list[PathFlag] = []
        parser.set_defaults(paths=self)

    def _add(self, role: str, flags: tuple[str, ...], kwargs: dict) -> argparse.Action:
        action = self.parser.add_argument(*flags, **kwargs)
        action.role = role  # type: ignore[attr-defined]  # what the parser walk in the tests reads
        return action

    def input(self, *flags: str, files: Callable | None = None, **kwargs) -> argparse.Action:
        """A path the command reads; `files(args)`: the files it stands for, when not its own path."""
        action = self._add("input", flags, kwargs)
        self.declared.append(PathFlag(action, "input", files))
        return action

    def output(self, *flags: str, whole: bool = True, files: Callable | None = None, **kwargs) -> argparse.Action:
        """A path the command writes: replaced as a whole, or (`whole=False`) a folder it writes into."""
        action = self._add("output", flags, kwargs)
        self.declared.append(PathFlag(action, "output", files, whole))
        return action

    def value(self, *flags: str, **kwargs) -> argparse.Action:
        """A string flag that names no path (a descriptor prefix, a device, a list of models)."""
        return self._add("value", flags, kwargs)

    def exclusive(self, required: bool = False) -> Flags:
        """Flags of which at most one (`required`: exactly one) is given, declared in this command's list."""
        group = Flags.__new__(Flags)
        group.parser = self.parser.add_mutually_exclusive_group(required=required)  # type: ignore[assignment]
        group.declared = self.declared
        return group

    def inputs(self, args: argparse.Namespace) -> list[Path]:
        """Every file and folder the run reads, as given."""
        return [p for d in self.declared if d.role == "input" for p in d.paths(args)]

    def check(self, args: argparse.Namespace) -> None:
        """Refuse an output replaced as a whole that is, or holds, an input of the run."""
        inputs = self.inputs(args)
        for d in self.declared:
            if d.role == "output" and d.whole:
                check_outputs(d.paths(args), inputs, force=True, param=d.action.dest)
