# syntax=docker/dockerfile:1
# The OpenAI-compatible frontend: base dependencies only (no torch, no onnxruntime), non-root.
# Build from the repository root: docker build -f docker/frontend.Dockerfile -t modelgate-frontend .
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml ./
COPY frontend/ frontend/
# The typed contract shared with the Triton models (limits, capabilities, override allow-list): stdlib only.
COPY triton_models/__init__.py triton_models/contract.py triton_models/
RUN pip install --no-cache-dir .

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin modelgate
COPY --from=build /opt/venv /opt/venv
COPY docker/healthcheck.py /opt/modelgate/healthcheck.py
# The container's port must listen on every address (the setting's default is loopback); compose and the
# chart set MODELGATE_HOST as well.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODELGATE_HOST=0.0.0.0 \
    MODELGATE_PORT=8000
WORKDIR /opt/modelgate
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/opt/modelgate/healthcheck.py"]
CMD ["python", "-m", "frontend"]
