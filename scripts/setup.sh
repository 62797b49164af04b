#!/usr/bin/env bash
# Create or reuse .venv in the repo root and install the project into it.
#   bash scripts/setup.sh          # runtime: generate, serve, export (includes bpy for OpenVDB)
#   bash scripts/setup.sh --dev    # plus test/benchmark tools (pytest, spconv, grpcio-tools)
# Every install honours constraints.txt (torch==2.13.0 CPU, numpy<2, bpy==5.0.1).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
extra="vdb"
[[ "${1:-}" == "--dev" ]] && extra="dev"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
if [[ ! -x .venv/bin/python ]]; then
  echo "[setup] creating .venv with $($py --version)"
  "$py" -m venv .venv
fi
stamp=".venv/.xcube-installed-$extra"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "[setup] .venv is up to date ($extra)"
else
  echo "[setup] installing xcube-artists[$extra] into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[$extra]"
  echo "$want" > "$stamp"
fi
# Stubs are generated from the proto, never edited; regenerate when the proto is newer.
if [[ -f scripts/gen_proto.py ]] && .venv/bin/python -c "import grpc_tools" 2>/dev/null; then
  .venv/bin/python scripts/gen_proto.py --if-stale
fi
