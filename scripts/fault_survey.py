"""The robustness table: every case of tests/fault_cases.py run against one rerankrt, counted by class
(clear error, misleading, traceback, silently wrong, data lost), one line per case that is not clear.

    python scripts/fault_survey.py                   # the rerankrt of this checkout
    python scripts/fault_survey.py --rerankrt PATH   # another one, e.g. an earlier commit installed with
                                                     # pip install --no-deps --target PATH <its checkout>
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fault_cases import CASES, main_in, prepare_base, run_case  # noqa: E402

CLASSES = ["clear", "misleading", "traceback", "silently wrong", "data lost", "no such option"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rerankrt", type=Path, help="a folder holding another rerankrt package")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(args.rerankrt)} if args.rerankrt else None
    main = main_in(args.rerankrt)
    counts: collections.Counter = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        prepare_base(base, [sys.executable, "-m", "rerankrt"], env)
        for i, case in enumerate(CASES):
            kind, code, text = run_case(case, base, Path(tmp) / f"w{i}", main)
            counts[kind] += 1
            if kind != "clear":
                print(f"{kind:<15} {case.name}: exit {code}; {' '.join(text.split())[:150]}")
    print("| " + " | ".join(CLASSES) + " |\n|" + "---:|" * len(CLASSES))
    print("| " + " | ".join(str(counts[c]) for c in CLASSES) + " |")


if __name__ == "__main__":
    main()
