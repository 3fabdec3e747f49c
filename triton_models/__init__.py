"""Code that runs inside Triton's Python backend: our `onnxruntime` stand-in backend, tokenisers, engines.

`model.py` files in the model repository are one-line shims that import a `TritonPythonModel` from here,
so the logic is importable, unit-tested and shared instead of copied into each model folder.
"""

import os as _os


def config_parameters(config: dict) -> dict[str, str]:
    """A model config's `parameters` (Triton's JSON shape) as plain strings: how every model reads its settings."""
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


# Test runs measure code inside Triton's stub processes too: the launcher sets COVERAGE_PROCESS_START
# for them when the test session is under coverage (see launcher.triton.stub_environment).
if _os.environ.get("COVERAGE_PROCESS_START"):
    try:
        import coverage as _coverage

        _coverage.process_startup()
    except ImportError:  # pragma: no cover - coverage is a test dependency
        pass
