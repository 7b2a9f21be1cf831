#!/usr/bin/env bash
# Create .venv and install everything the repo needs, and the repo in editable mode (idempotent; safe to rerun).
# Machines without an NVIDIA GPU get the CPU build of torch (~200 MB instead of several GB).
# Override the torch requirement with TORCH_SPEC, e.g. TORCH_SPEC="torch==2.9.1" bash setup.sh
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if [ -n "${TORCH_SPEC:-}" ]; then
    echo "setup: installing $TORCH_SPEC"
    "${PIP[@]}" "$TORCH_SPEC"
  elif command -v nvidia-smi >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found, installing the CUDA build of torch"
    "${PIP[@]}" "torch>=2.5"
  else
    echo "setup: no NVIDIA GPU, installing the CPU build of torch"
    CPU_INDEX=()  # PyTorch's own index when it resolves; otherwise a local mirror may hold the CPU wheel
    if .venv/bin/python -c "import socket; socket.getaddrinfo('download.pytorch.org', 443)" 2>/dev/null; then
      CPU_INDEX=(--extra-index-url https://download.pytorch.org/whl/cpu)
    fi
    "${PIP[@]}" "torch==2.13.0+cpu" "${CPU_INDEX[@]}" || {
      echo "setup: no CPU build of torch reachable; installing torch from the package index"
      "${PIP[@]}" "torch>=2.5"
    }
  fi
fi
echo "setup: installing requirements.txt and the repo itself (editable)"
"${PIP[@]}" -r requirements.txt
"${PIP[@]}" --no-deps -e .
.venv/bin/python -c "import torch; print(f'setup: done (torch {torch.__version__}, cuda={torch.cuda.is_available()})')"
