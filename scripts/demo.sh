#!/usr/bin/env bash
# The main job end to end: install what is missing, then run `tkms demo` (args passed on).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/tkms demo "$@"
