#!/usr/bin/env bash
# Sets up everything `make test` and `make demo` need on a fresh machine:
#   a virtualenv, the CPU build of torch 2.13.0 unless a torch is already importable there,
#   the project with every adapter and the dev tools, and Debian's WordNet and FOLDOC
#   (wordnet-base, dict-foldoc) when apt can install them.
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

# WordNet 3.0 and FOLDOC are the built-in real datasets. Install the missing ones, in one apt
# call, when apt is usable; a failure only skips their real-data tests.
APT_PACKAGES=()
if [ ! -f /usr/share/wordnet/data.noun ] && [ -z "${WNHOME:-}" ]; then
    APT_PACKAGES+=(wordnet-base)
fi
if [ ! -f /usr/share/dictd/foldoc.index ] && [ -z "${FOLDOC_DICT:-}" ]; then
    APT_PACKAGES+=(dict-foldoc)
fi
if [ "${#APT_PACKAGES[@]}" -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        (apt-get update -qq \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${APT_PACKAGES[@]}") \
            || echo "warning: could not install ${APT_PACKAGES[*]}; their tests will be skipped" >&2
    else
        echo "note: ${APT_PACKAGES[*]} missing; install them with apt-get" \
            "(or set WNHOME / FOLDOC_DICT)" >&2
    fi
fi
