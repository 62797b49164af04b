#!/usr/bin/env bash
# Train the shipped default model from scratch on CPU with our own procedural data, then assemble it
# into xcube_core/assets/default_model. Every step resumes from its last checkpoint when re-run, so
# the script can be interrupted and started again at any time.
#
#   bash scripts/train_default_model.sh            # data in .cache/data/scenes, runs in .cache/runs
#   STEPS_SCALE=0.1 bash scripts/train_default_model.sh   # a quick, weak model (smoke run)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
DATA="${DATA:-.cache/data/scenes}"
RUNS="${RUNS:-.cache/runs}"
SCALE="${STEPS_SCALE:-1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
x=".venv/bin/xcube"
steps() { python3 -c "print(max(1, int($1 * $SCALE)))"; }

# 1. data: 400 train / 32 val / 64 test scenes, 64 m x 64 m at 0.25 m (seeds fixed by split)
if [[ ! -f "$DATA/.complete" ]]; then
  $x data procedural --out "$DATA" --count 400 --split train --workers 2
  $x data procedural --out "$DATA" --count 32 --split val --workers 2
  $x data procedural --out "$DATA" --count 64 --split test --workers 2
  touch "$DATA/.complete"
fi

train() {  # kind level steps batch lr [task options...]
  local kind=$1 level=$2 n=$3 bs=$4 lr=$5; shift 5
  local out="$RUNS/${kind}${level}"
  local resume=(); [[ -d "$out/checkpoints" ]] && resume=(--resume)
  if [[ -f "$out/model/config.json" && -f "$out/.done" ]]; then echo "[train] $out done"; return; fi
  $x train "$kind" --level "$level" --data "$DATA" --out "$out" --max-steps "$(steps "$n")" \
     --batch-size "$bs" --lr "$lr" --ckpt-every 100 --no-progress "${resume[@]}" "$@"
  touch "$out/.done"
}

# 2. VAEs (level 0: whole scenes at 1 m; level 1: 32 m crops at 0.25 m)
train vae 0 1500 2 5e-4
train vae 1 1500 2 5e-4 -o crop=64
# 3. diffusion on the frozen VAEs' latents, and refinement on noised-posterior decodings
train diffusion 0 3000 8 3e-4 -o vae_path="$RUNS/vae0/model"
train diffusion 1 1500 4 3e-4 -o vae_path="$RUNS/vae1/model" -o crop=128
train refine 0 800 2 5e-4 -o vae_path="$RUNS/vae0/model"
train refine 1 1200 1 5e-4 -o vae_path="$RUNS/vae1/model" -o crop=64

# 4. assemble the pipeline folder that ships in the package
# (the refinement nets of v1 lowered reconstruction IoU, 0.83 -> 0.68 at level 0: left out, see docs)
.venv/bin/python -m xcube_core.train.assemble --runs "$RUNS" --out xcube_core/assets/default_model \
  --model-id "xcube-procedural-v1" --no-refine --float16
