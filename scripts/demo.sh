#!/usr/bin/env bash
# The main job, the showcase: `lever reproduce` on slices of both built-in datasets (FOLDOC see-also
# and the WordNet taxonomy), all three backbones (Renée, ELIAS, CascadeXML) without and with LEVER:
#   data -> frozen Siamese teacher -> soft labels -> each backbone ± LEVER -> one table per dataset
#   (teacher alone first: LEVER helps where the teacher leads the student on the tail).
# Timing: 11 min on the 2-core CPU (set-up excluded) with one full-WordNet training job beside it. DEMO_FOLDOC_DOCS=0 /
# DEMO_WORDNET_DOCS=0 run a full dataset (FOLDOC ~30 min, WordNet hours). Every stage and cell
# resumes or is skipped when its output exists, so an interrupted demo can be re-run.
set -euo pipefail
VENV=${VENV:-.venv}
DEMO_DIR=${DEMO_DIR:-runs/demo}
DEMO_FOLDOC_DOCS=${DEMO_FOLDOC_DOCS:-3000}
DEMO_WORDNET_DOCS=${DEMO_WORDNET_DOCS:-3000}
DEMO_BACKBONES=${DEMO_BACKBONES:-renee,elias,cascadexml}
export PATH="$VENV/bin:$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$DEMO_DIR"
start=$(date +%s)

for name in foldoc wordnet; do
    docs_var="DEMO_${name^^}_DOCS"
    docs=${!docs_var}
    data="$DEMO_DIR/$name"
    echo "== $name: dataset"
    if [ ! -f "$data/lever_meta.json" ]; then
        if [ "$docs" = "0" ]; then
            lever data build "$name" --out "$data"
        else
            lever data build "$name" --out "$data" --max-docs "$docs"
        fi
    fi
    lever data stats "$data" --plot "$DEMO_DIR/${name}_label_frequency.png"
    echo "== $name: lever reproduce (teacher, soft labels, $DEMO_BACKBONES ± LEVER)"
    # the full output (model-loading chatter included) goes to the log; the per-cell lines are shown
    if ! lever reproduce --data "$data" --backbones "$DEMO_BACKBONES" --out "$DEMO_DIR/reproduce_$name" \
            --no-progress > "$DEMO_DIR/reproduce_$name.log" 2>&1; then
        tail -n 40 "$DEMO_DIR/reproduce_$name.log"
        exit 1
    fi
    grep -E "^(stage|\[[0-9]+/[0-9]+\])" "$DEMO_DIR/reproduce_$name.log" || true
done

echo
for name in foldoc wordnet; do
    # the table itself (up to its stage list), then where the plots are
    sed -n '1,/^## Stages/p' "$DEMO_DIR/reproduce_$name/table.md" | sed '$d'
    echo "plots: $DEMO_DIR/reproduce_$name/summary.png, $DEMO_DIR/reproduce_$name/deciles_*.png"
    echo
done
echo "demo finished in $(( ($(date +%s) - start) / 60 )) min"
