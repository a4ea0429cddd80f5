#!/usr/bin/env bash
# The main job: build the WordNet dataset and run the LEVER pipeline stages that exist so far.
set -euo pipefail
VENV=${VENV:-.venv}
DEMO_DIR=${DEMO_DIR:-runs/demo}
export PATH="$VENV/bin:$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
DATA="$DEMO_DIR/wordnet"

[ -f "$DATA/lever_meta.json" ] || lever data build wordnet --out "$DATA"
lever data stats "$DATA" --plot "$DEMO_DIR/label_frequency.png"
