#!/usr/bin/env bash
# Set up on a fresh machine and run the test suite (what CI runs). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy src
.venv/bin/python -m pytest "$@"
