"""`python -m launcher serve`: the real tritonserver plus the OpenAI frontend, as `make serve` runs them."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from launcher.repository import model_names, served_models
from launcher.triton import LaunchError, TritonServer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m launcher")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start Triton (explicit model control) and the frontend")
    serve.add_argument("--repository", type=Path, default=Path("model_repository"))
    serve.add_argument("--models", help="comma-separated models to load (default: every model in the repository)")
    serve.add_argument("--host", default=None, help="frontend host (default: MODELGATE_HOST or 0.0.0.0)")
    serve.add_argument("--port", type=int, default=None, help="frontend port (default: MODELGATE_PORT or 8000)")
    serve.add_argument("--triton-grpc-port", type=int, default=8001)
    serve.add_argument("--triton-http-port", type=int, default=8081)
    serve.add_argument("--triton-metrics-port", type=int, default=8002)
    return parser


def serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415

    from frontend.app import create_app  # noqa: PLC0415
    from frontend.settings import Settings  # noqa: PLC0415

    models = args.models.split(",") if args.models else model_names(args.repository)
    if not models:
        raise LaunchError(f"no models in {args.repository}: run `make export`")
    triton = TritonServer(args.repository, models, http_port=args.triton_http_port,
                          grpc_port=args.triton_grpc_port, metrics_port=args.triton_metrics_port)
    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    served = [m for m in served_models(args.repository) if m in models]
    settings = Settings(triton_grpc_url=triton.grpc_url,
                        required_models=served, **overrides)
    with triton:
        print(f"Triton: gRPC {triton.grpc_url}, HTTP {triton.http_url}, metrics :{triton.metrics_port}; "
              f"models: {', '.join(models)}", flush=True)
        print(f"OpenAI API: http://{settings.host}:{settings.port}/v1 (serving {', '.join(served)})", flush=True)
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                    log_config=None)
    return 0


def main(argv: list[str] | None = None) -> int:
    from frontend import logs  # noqa: PLC0415 - the request id in every line, uvicorn's included

    logs.configure("info")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        return serve(args)
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
