"""The one reader of rerankrt's tagged JSON files: a graph's or an engine's sidecar, an index's or a store's
manifest, a results.json. Each is a JSON object whose tag (`format`, or a results.json's `schema`) names
the writer's version; a missing file, one that is not JSON and one of another tag are refused with the
same three messages, each naming the file and what makes a good one."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path


def read_tagged_json(path: Path, accepted: Collection[str], subject: str | None = None, missing: str = "missing",
                     hint: str = "", key: str = "format", error: type[Exception] = ValueError,
                     missing_error: type[Exception] | None = None) -> dict:
    """The JSON object at `path` whose `key` is one of `accepted` (the first is what this rerankrt writes).
    Refused, as `error` (`missing_error` where the file is absent): "SUBJECT: MISSING", "PATH: not valid JSON
    (…)HINT", "SUBJECT: expected KEY 'TAG', got 'OTHER'HINT"; `subject` defaults to the path."""
    subject = subject or str(path)
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise (missing_error or error)(f"{subject}: {missing}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e}){hint}") from None
    if not isinstance(value, dict) or value.get(key) not in accepted:
        found = value.get(key) if isinstance(value, dict) else type(value).__name__
        raise error(f"{subject}: expected {key} {next(iter(accepted))!r}, got {found!r}{hint}")
    return value
