"""Code that runs inside Triton's Python backend: our `onnxruntime` stand-in backend, tokenisers, engines.

`model.py` files in the model repository are one-line shims that import a `TritonPythonModel` from here,
so the logic is importable, unit-tested and shared instead of copied into each model folder.
"""

import os as _os
from pathlib import Path as _Path


class UnsafeConfigValue(ValueError):
    """A config value names a file outside the model's version folder (raised from `initialize`: the load fails)."""


def config_parameters(config: dict) -> dict[str, str]:
    """A model config's `parameters` (Triton's JSON shape) as plain strings: how every model reads its settings."""
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


def version_file(version_dir: _Path | str, name: str, key: str) -> _Path:
    """The file `name` (the config value `key`) in the model's version folder; anything but a plain file name
    is refused, so a load-time config override cannot make a model open /etc/passwd or ../other/model.onnx.

    Checked by name, not by resolving links: a symlink the repository's owner placed in the folder (a shared
    weights cache) is theirs to make; what a config value may not do is name another place.
    """
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):  # absolute, nested, parent, or NUL
        raise UnsafeConfigValue(f"config parameter {key} must be a file name inside the model's version folder, "
                                f"got {name!r}")
    return _Path(version_dir) / name


# Test runs measure code inside Triton's stub processes too: the launcher sets COVERAGE_PROCESS_START
# for them when the test session is under coverage (see launcher.triton.stub_environment).
if _os.environ.get("COVERAGE_PROCESS_START"):
    try:
        import coverage as _coverage

        _coverage.process_startup()
    except ImportError:  # pragma: no cover - coverage is a test dependency
        pass
