#!/usr/bin/env bash
# The README's main job: install hiergym and run it on the built-in default.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --upgrade pip
python -m pip install -q -e .
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
hiergym list
hiergym play hiergym/Sokoban-v0 --seed 0 --expert
