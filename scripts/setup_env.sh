#!/usr/bin/env bash
# Sets up everything `make test` and `make demo` need on a fresh machine:
#   a virtualenv, the CPU build of torch 2.13.0 unless a torch is already importable there,
#   the project with every adapter and the dev tools, and Debian's WordNet when apt can install it.
set -euo pipefail
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip

# A bare `torch` requirement would pull the CUDA wheels (gigabytes); pin the CPU build first so
# the project's `torch>=2.1` is already satisfied.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    $PIP install -q "torch==2.13.0"
fi
$PIP install -q -e ".[all,dev]"

# WordNet 3.0 is the built-in real dataset. Install it when it is missing and apt is usable.
if [ ! -f /usr/share/wordnet/data.noun ] && [ -z "${WNHOME:-}" ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base) \
            || echo "warning: could not install wordnet-base; WordNet tests will be skipped" >&2
    else
        echo "note: WordNet not found; install Debian's wordnet-base or set WNHOME" >&2
    fi
fi
