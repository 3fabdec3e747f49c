# Triton Python-based backend "onnxruntime": the CPU stand-in for the native ONNX Runtime backend.
# The bundled stub's interpreter ignores PYTHONPATH, so the launcher passes our paths in MODELGATE_PYTHONPATH.
import os
import sys

sys.path[:0] = [p for p in os.environ.get("MODELGATE_PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

from triton_models.onnxruntime_backend import TritonPythonModel  # noqa: E402,F401
