#!/usr/bin/env bash
# The device check of the calibration issue as one command, for a machine with an NVIDIA H200 (or
# another GPU / an Ascend NPU) and PyTorch already installed: the kernel set, single-device training
# steps, and the report (docs/single_device.md). About 5-10 minutes on an H200.
#   bash benchmarks/device_session.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-runs/device}}
python -c "import torch" 2>/dev/null || { echo "device_session: PyTorch is not installed here" >&2; exit 2; }
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # works without installing npusim (offline machines)
python -m npusim.cli microbench --out "$OUT/kernels" --steps
python benchmarks/device_session.py --from "$OUT/kernels" --out "${REPORT:-docs/single_device.md}"
