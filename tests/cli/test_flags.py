"""The library's errors name its parameters; every command line prints them as its own flags (`core.flags`)."""

import argparse
import ast
import re
from pathlib import Path

import pytest

from rerankrt.core.errors import InputError, OutputExistsError
from rerankrt.core.flags import DESTS, in_flags

SRC = Path(__file__).resolve().parents[2] / "src" / "rerankrt"

#: backquoted words in library errors that are no parameter ("a `with` block")
NOT_PARAMETERS = {"with"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--budget-bytes", type=float)
    p.add_argument("--lambda", dest="lam", type=float)
    p.add_argument("--rerank-checkpoint")
    p.add_argument("--force", action="store_true")
    p.add_argument("out")
    return p


def test_an_error_names_its_parameter_and_the_command_line_its_flag():
    error = InputError("expected a positive number of bytes per image, got 0", param="budget_bytes")
    assert str(error) == "budget_bytes: expected a positive number of bytes per image, got 0"
    assert error.param == "budget_bytes" and isinstance(error, ValueError)
    assert in_flags(error, _parser()) == "--budget-bytes: expected a positive number of bytes per image, got 0"
    assert in_flags(InputError("expected a weight in [0, 1], got 2", param="lam"), _parser()) == \
        "--lambda: expected a weight in [0, 1], got 2"
    assert in_flags(InputError("not a checkpoint", param="weights.rerank"), _parser()) == \
        "--rerank-checkpoint: not a checkpoint"  # a parameter whose flag has another name (DESTS)


def test_a_hint_in_backquotes_becomes_a_flag_and_a_positional_its_name():
    error = OutputExistsError("idx exists (pass `force` to replace it)", param="out")
    assert str(error) == "out: idx exists (pass `force` to replace it)" and isinstance(error, FileExistsError)
    assert in_flags(error, _parser()) == "OUT: idx exists (pass --force to replace it)"


def test_a_parameter_no_flag_of_the_command_sets_is_printed_as_it_is():
    error = InputError("expected a positive shortlist length, got 0 (see `nprobe`, a `with` block)", param="k")
    assert in_flags(error, _parser()) == str(error)
    assert in_flags(ValueError("plain"), None) == "plain"


def _commands(parser):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
    for action in subs:
        for sub in action.choices.values():
            yield from _commands(sub)


def _library_errors():
    """(file, the error call) of every error raised outside the command line."""
    for path in SRC.rglob("*.py"):
        if "cli" not in path.relative_to(SRC).parts:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "id", "").endswith("Error"):
                    yield path.relative_to(SRC), node


@pytest.fixture(scope="module")
def dests():
    from rerankrt.cli import build_parser

    return {a.dest for p in _commands(build_parser()) for a in p._actions}


def test_every_parameter_a_library_error_names_is_set_by_a_flag(dests):
    """So that no error reaches a user of the command line in the library's words: a parameter renamed, or a
    flag renamed, fails here rather than printing a name no flag has."""
    named, loose = set(), []
    for path, call in _library_errors():
        for k in call.keywords:
            if k.arg == "param" and isinstance(k.value, ast.Constant):
                named.add((str(path), k.value.value))
        for c in ast.walk(call):
            if isinstance(c, ast.Constant) and isinstance(c.value, str):
                named |= {(str(path), m) for m in re.findall(r"`([a-z][a-z0-9_.]*)`", c.value)}
            if isinstance(c, ast.Constant) and isinstance(c.value, str) and re.match(r"--[a-z]", c.value):
                loose.append(f"{path}: {c.value[:40]}")
    assert len(named) > 50
    assert sorted((p, n) for p, n in named if DESTS.get(n, n) not in dests and n not in NOT_PARAMETERS) == []
    assert loose == []  # a library message that starts with a flag: it names the parameter instead (`param`)
