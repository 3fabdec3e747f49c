"""`python -m bench [name ...]`: run benchmarks and write each table into docs/benchmarks.md.

`python -m bench serve --base-url URL --model M ...` measures any OpenAI-compatible server (bench/serve.py).

Each table goes between `<!-- BEGIN name -->` and `<!-- END name -->` markers, with the date and command.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import logging
import os
import platform
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
# name -> module with run(repository, threads) -> markdown
BENCHMARKS = {
    "embeddings": "bench.embeddings",
    "engine": "bench.engine",
    "images": "bench.images",
    "llm": "bench.llm",
    "soak": "bench.soak",
}
# Run only when named (`python -m bench soak --minutes 10`), and written to their own page.
ON_REQUEST = {"soak": ROOT / "docs" / "reliability.md"}


def write_section(name: str, body: str, path: Path = DOCS) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    command = f"`python -m bench {name}`" if name in ON_REQUEST else f"`make bench` (`python -m bench {name}`)"
    stamp = f"_Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} cores, with {command}._"
    block = f"<!-- BEGIN {name} -->\n{stamp}\n\n{body}\n<!-- END {name} -->"
    pattern = re.compile(rf"<!-- BEGIN {name} -->.*?<!-- END {name} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text.rstrip()}\n\n## {name}\n\n{block}\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:  # a load generator for any OpenAI-compatible server, with its own options
        from bench import serve

        return serve.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", help=f"some of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--rounds", type=int, help="rounds per measurement (default: each benchmark's own)")
    parser.add_argument("--minutes", type=float, help="soak: how long the traffic runs (default: 10)")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    for name in args.names or [n for n in BENCHMARKS if n not in ON_REQUEST]:
        options = {"rounds": args.rounds} if args.rounds else {}
        if name == "soak":
            options = {"minutes": args.minutes} if args.minutes else {}
        body = importlib.import_module(BENCHMARKS[name]).run(args.repository, threads=args.threads, **options)
        print(f"## {name}\n\n{body}\n", flush=True)
        if not args.no_write:
            write_section(name, body, ON_REQUEST.get(name, DOCS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
