"""Code that runs inside Triton's Python backend: our `onnxruntime` stand-in backend, tokenisers, engines.

`model.py` files in the model repository are one-line shims that import a `TritonPythonModel` from here,
so the logic is importable, unit-tested and shared instead of copied into each model folder.
"""
