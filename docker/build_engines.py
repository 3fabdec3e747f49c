"""TensorRT engines with `trtexec` and their `gpu` config variants: now `python -m export_scripts engines`.

Kept as the export image's stand-alone entry; the logic (profiles from config extents or flags, parity against
ONNX Runtime, the `gpu` variants) lives in export_scripts/engines.py. `--dry-run` prints the trtexec commands.
"""

from __future__ import annotations

import sys

from export_scripts.engines import main

if __name__ == "__main__":
    sys.exit(main(builder="trtexec"))
