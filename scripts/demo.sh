#!/usr/bin/env bash
# The main job: the whole LEVER pipeline on the WordNet taxonomy-completion dataset.
#   data -> Siamese teacher -> soft labels -> student without and with LEVER -> tables.
# On this 2-core CPU the default slice (DEMO_MAX_DOCS=5000) took 17 minutes once set up, with two other
# training jobs running beside it;
# DEMO_MAX_DOCS=0 runs the full dataset (82k documents, 17k labels; hours on 2 cores).
# Every stage resumes or skips when its output exists, so an interrupted demo can be re-run.
set -euo pipefail
VENV=${VENV:-.venv}
DEMO_DIR=${DEMO_DIR:-runs/demo}
DEMO_MAX_DOCS=${DEMO_MAX_DOCS:-5000}
BACKBONE=${DEMO_BACKBONE:-renee}
export PATH="$VENV/bin:$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

DATA="$DEMO_DIR/wordnet"
TEACHER="$DEMO_DIR/teacher"
SOFT="$DEMO_DIR/soft_labels.npz"
mkdir -p "$DEMO_DIR"

echo "== 1. dataset"
if [ ! -f "$DATA/lever_meta.json" ]; then
    if [ "$DEMO_MAX_DOCS" = "0" ]; then
        lever data build wordnet --out "$DATA"
    else
        lever data build wordnet --out "$DATA" --max-docs "$DEMO_MAX_DOCS"
    fi
fi
lever data stats "$DATA" --plot "$DEMO_DIR/label_frequency.png"

echo "== 2. Siamese teacher (zero-shot MiniLM first, for comparison)"
# On a CPU the teacher is the frozen kind: a tower trained over cached MiniLM embeddings
# (docs/teacher.md); the cache is shared with the students below, so texts are embedded once.
lever teacher eval --data "$DATA" --zero-shot
[ -f "$TEACHER/embeddings/meta.json" ] || \
    lever teacher train --data "$DATA" --out "$TEACHER" --kind frozen --cache-dir "$DEMO_DIR/cache" --resume
lever teacher eval --data "$DATA" --teacher "$TEACHER"

echo "== 3. soft labels"
[ -f "$SOFT" ] || lever soft-labels build --data "$DATA" --teacher "$TEACHER" --out "$SOFT"
lever soft-labels stats "$SOFT" --data "$DATA"

echo "== 4. student: $BACKBONE, $BACKBONE with label rows, $BACKBONE + LEVER"
# Each backbone brings its own CPU defaults (Renée: frozen MiniLM ⊕ TF-IDF bag, 5 epochs).
TRAIN_FLAGS=(--cache-dir "$DEMO_DIR/cache" --seed 0)
lever train --data "$DATA" --backbone "$BACKBONE" --out "$DEMO_DIR/$BACKBONE" --no-label-rows "${TRAIN_FLAGS[@]}"
lever train --data "$DATA" --backbone "$BACKBONE" --out "$DEMO_DIR/${BACKBONE}_label_rows" --label-rows "${TRAIN_FLAGS[@]}"
lever train --data "$DATA" --backbone "$BACKBONE" --out "$DEMO_DIR/${BACKBONE}_lever" --soft-labels "$SOFT" "${TRAIN_FLAGS[@]}"

echo "== 5. is the teacher the tail expert? (teacher against the plain student, per decile)"
lever soft-labels diagnose --data "$DATA" --teacher "$TEACHER" --run "$DEMO_DIR/$BACKBONE" \
    --plot "$DEMO_DIR/diagnosis.png"

echo "== 6. tables"
RUNS=("$BACKBONE" "${BACKBONE}_label_rows" "${BACKBONE}_lever")
for run in "${RUNS[@]}"; do
    lever predict --run "$DEMO_DIR/$run" --data "$DATA" --out "$DEMO_DIR/$run/pred.npz"
    echo "-- $run"
    lever eval --data "$DATA" --pred "$DEMO_DIR/$run/pred.npz" --deciles "$DEMO_DIR/$run/deciles.png"
    lever eval --data "$DATA" --pred "$DEMO_DIR/$run/pred.npz" --json > "$DEMO_DIR/$run/eval.json"
done

echo "== summary (paper format, %): $DATA"
python - "$DEMO_DIR" "${RUNS[@]}" <<'PY'
import json, sys
root, runs = sys.argv[1], sys.argv[2:]
cols = [f"{m}@{k}" for m in ("P", "PSP", "C") for k in (1, 3, 5)]
print("| run | " + " | ".join(cols) + " |")
print("|---" * (len(cols) + 1) + "|")
for run in runs:
    res = json.load(open(f"{root}/{run}/eval.json"))
    print(f"| {run} | " + " | ".join(f"{res[c]:.2f}" for c in cols) + " |")
PY
