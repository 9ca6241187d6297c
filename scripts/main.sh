#!/usr/bin/env bash
# Set up on a fresh machine and run the main job on the built-in default (released configurations
# with random weights). Today: the environment and the registered models; export → validate → profile
# join as those stages land.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/rerankrt info
.venv/bin/rerankrt models
