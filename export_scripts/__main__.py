"""`python -m export_scripts {all,embeddings,...} [--repository model_repository] [--force] [options]`.

Each exporter module defines `add_arguments(parser)` and `run(args) -> list[str]` (the served model names)
and is listed in EXPORTERS; `all` runs every exporter with its defaults, skipping what is up to date (and the
GPU_ONLY ones where no GPU is visible).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from export_scripts.common import ExportError

# subcommand -> module; the order is the order `all` runs them in.
EXPORTERS = {
    "embeddings": "export_scripts.embeddings",
    "rerank": "export_scripts.rerank",
    "llm": "export_scripts.llm",
    "diffusion": "export_scripts.diffusion",
    "llava": "export_scripts.llava",
    "engines": "export_scripts.engines",
}
# Subcommands `all` runs only where their module's `gpu_available()` is true (TensorRT engines need a GPU).
GPU_ONLY = {"engines"}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--repository", type=Path, default=Path("model_repository"))
    common.add_argument("--force", action="store_true", help="export even when the stamp is current")
    parser = argparse.ArgumentParser(prog="python -m export_scripts", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("all", parents=[common], help="every default model")
    for name, module in EXPORTERS.items():
        sub_parser = sub.add_parser(name, parents=[common], help=f"export a {name} model")
        importlib.import_module(module).add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = list(EXPORTERS) if args.command == "all" else [args.command]
    try:
        for name in commands:
            module = importlib.import_module(EXPORTERS[name])
            if args.command == "all" and name in GPU_ONLY and not module.gpu_available():
                print(f"{name}: skipped, no GPU visible", flush=True)
                continue
            if args.command == "all":  # defaults for that exporter
                sub_args = parser.parse_args([name, f"--repository={args.repository}", *(["--force"] * args.force)])
            else:
                sub_args = args
            served = module.run(sub_args)
            logging.getLogger("export").info("%s: %s ready in %s", name, ", ".join(served), args.repository)
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
