#!/usr/bin/env bash
# Entry point of the export image: write the model repository, then TensorRT engines where a GPU is visible.
# Arguments go to `python -m export_scripts` (default: all). MODEL_REPOSITORY is the mounted volume.
set -euo pipefail
repository="${MODEL_REPOSITORY:-/models}"
cd "$(dirname "$0")/.."

python3 -m export_scripts --repository "$repository" "${@:-all}"

# `all` builds engines itself where a GPU is visible; this covers single-model exports (up to date otherwise).
if nvidia-smi -L >/dev/null 2>&1; then
    python3 -m export_scripts engines --repository "$repository" ${TRT_PRECISION:+--precision "$TRT_PRECISION"}
else
    echo "export: no GPU visible, no TensorRT engines built (Triton's ONNX Runtime backend serves model.onnx)"
fi

# The Helm chart's Triton pods wait for this revision's marker before they start.
if [ -n "${EXPORT_MARKER:-}" ]; then
    touch "$repository/$EXPORT_MARKER"
fi
