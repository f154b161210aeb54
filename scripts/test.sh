#!/usr/bin/env bash
# The README's test command: install hiergym with its test extras into the active Python and run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[dev,alfworld,plot,trl,ray]"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
python -m pytest tests "$@"
