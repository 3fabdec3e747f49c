# syntax=docker/dockerfile:1
# Triton for the GPU host: NVIDIA's server and native ONNX Runtime / TensorRT backends serve the networks;
# we add only what our Python-backend models import. backends/onnxruntime (the CPU stand-in) stays out.
# Build from the repository root: docker build -f docker/triton.Dockerfile -t modelgate-triton .
# 25.04: Triton 2.57, CUDA 12.9, Ubuntu 24.04 with Python 3.12 (onnxruntime >= 1.24 has no 3.10 wheels).
ARG TRITON_VERSION=25.04
FROM nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /tmp/modelgate
COPY pyproject.toml ./
COPY docker/triton_requirements.py docker/healthcheck.py docker/
COPY triton_models/ triton_models/
# Into the container's python3: that is the interpreter the Python backend stub runs.
# Requirements come from pyproject's `triton` extra (minus nvidia-pytriton) so there is one source of pins.
RUN python3 docker/triton_requirements.py pyproject.toml > requirements.txt \
    && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir -r requirements.txt \
    && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --no-deps . \
    && install -D -m 0644 docker/healthcheck.py /opt/modelgate/healthcheck.py \
    && rm -rf /tmp/modelgate

WORKDIR /opt/tritonserver
# The model repository is a volume (compose) or a PVC / object store (Helm); nothing is baked in.
VOLUME ["/models"]
EXPOSE 8000 8001 8002
# NVIDIA's image ships user triton-server with uid 1000 for running without root.
USER 1000
HEALTHCHECK --interval=15s --timeout=5s --start-period=10m --retries=3 \
    CMD ["python3", "/opt/modelgate/healthcheck.py", "http://127.0.0.1:8000/v2/health/ready"]
# compose.yaml and the chart run these flags plus --grpc-restricted-protocol / --http-restricted-api with
# their secret (model control only for the frontend). Run bare, the image leaves model control open: keep its
# ports on a private network.
CMD ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit", "--load-model=*", \
     "--cache-config=local,size=268435456"]
