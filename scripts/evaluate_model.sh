#!/usr/bin/env bash
# The evaluation protocol of docs/evaluation-protocol.md on one model folder, every report written as
# JSON into OUT (printed tables go to OUT/*.txt). Steps already reported are skipped on a re-run, so
# the script can be stopped and started again.
#
#   bash scripts/evaluate_model.sh MODEL_DIR OUT_DIR            # e.g. .cache/models/v3 .cache/eval/v3
#   DATA=.cache/data/scenes BIG_DATA=.cache/data/big192 GEN_SEEDS="0 64" PROMPT_SEEDS=8 bash scripts/evaluate_model.sh M OUT
#
# Generation is run once per seed set in GEN_SEEDS (N = 64 each): at N = 64 one standard error of
# 1-NNA is about 4 points, so two sets show how much of a difference is noise.
set -euo pipefail
if [[ $# -ne 2 ]]; then
  echo "usage: $0 MODEL_DIR OUT_DIR  (see the comment at the top of this script)" >&2
  exit 2
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
model=$1 out=$2
data="${DATA:-.cache/data/scenes}"
[[ -d "$model" ]] || { echo "no model folder $model" >&2; exit 2; }
[[ -f "$data/manifest.jsonl" ]] || { echo "no dataset in $data: run scripts/train_default_model.sh (step 1) first" >&2; exit 2; }
mkdir -p "$out"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
x=".venv/bin/xcube"

step() {  # name command...: run once, table to OUT/name.txt, JSON to OUT/name.json
  local name=$1; shift
  if [[ -f "$out/$name.json" ]]; then echo "[eval] $name: done"; return; fi
  echo "[eval] $name: $*"
  "$@" --no-progress --out "$out/$name.json.part" > "$out/$name.txt" 2>&1 || { cat "$out/$name.txt" >&2; return 1; }
  mv "$out/$name.json.part" "$out/$name.json"
}

step vae $x eval vae --model "$model" --reference "$data" --num 32
step upsampling $x eval upsampling --model "$model" --reference "$data" --num 32
big="${BIG_DATA:-.cache/data/big192}"  # sites 3x a native scene wide: the finer levels as a large scene's
if [[ ! -f "$big/manifest.jsonl" ]]; then
  $x data procedural --out "$big" --count 12 --split test --extent 192 192 --workers 1 > /dev/null
fi
step upsampling192 $x eval upsampling --model "$model" --reference "$big" --num 12
for s in ${GEN_SEEDS:-0 64}; do
  step "gen_seed$s" $x eval generation --model "$model" --reference "$data" --num 64 --seed "$s"
done
step prompts $x eval prompts --model "$model" --seeds "${PROMPT_SEEDS:-8}" --steps 10
if [[ ! -f "$out/bench_generate.json" ]]; then
  $x bench generate --model "$model" --runs 3 --json > "$out/bench_generate.json.part" && \
    mv "$out/bench_generate.json.part" "$out/bench_generate.json"
fi
du -b -c "$model"/level*/*/*.safetensors | tail -n 1 | awk '{printf "{\"weight_bytes\": %d}\n", $1}' > "$out/size.json"
echo "[eval] reports in $out"
