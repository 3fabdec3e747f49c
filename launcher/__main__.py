"""`python -m launcher serve`: the real tritonserver plus the OpenAI frontend, as `make serve` runs them."""

from __future__ import annotations

import argparse
import logging
import secrets
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from launcher.repository import model_names, served_models
from launcher.supervise import Supervisor
from launcher.triton import LOOPBACK, RESTRICTED_PROTOCOLS, LaunchError, TritonServer

log = logging.getLogger("launcher")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m launcher")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start Triton (explicit model control) and the frontend")
    serve.add_argument("--repository", type=Path, default=Path("model_repository"))
    serve.add_argument("--models", help="comma-separated models to load (default: every model in the repository)")
    serve.add_argument("--host", default=None, help="frontend host (default: MODELGATE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="frontend port (default: MODELGATE_PORT or 8000)")
    serve.add_argument("--triton-grpc-port", type=int, default=8001)
    serve.add_argument("--triton-http-port", type=int, default=8081)
    serve.add_argument("--triton-metrics-port", type=int, default=8002)
    serve.add_argument("--triton-address", default=LOOPBACK,
                       help="address of Triton's HTTP, gRPC and metrics ports (default: loopback only; "
                            "0.0.0.0 opens them to the network)")
    serve.add_argument("--triton-api-secret", default=None,
                       help=f"header value that unlocks Triton's {', '.join(RESTRICTED_PROTOCOLS)} protocols "
                            "(default: MODELGATE_TRITON_API_SECRET, else a random one per run)")
    serve.add_argument("--triton-restart", choices=("always", "never"), default="always",
                       help="when tritonserver dies: start it again with backoff (always), or stop and exit "
                            "non-zero, leaving restarts to Kubernetes or compose (never)")
    serve.add_argument("--triton-trace-url", default="",
                       help="Triton's OpenTelemetry spans go to this OTLP/HTTP URL, e.g. "
                            "http://localhost:4318/v1/traces (requests the frontend samples: MODELGATE_TRACING)")
    serve.add_argument("--shutdown-timeout-s", type=float, default=30.0,
                       help="on SIGTERM/SIGINT: how long in-flight requests may finish, then how long Triton and "
                            "its model processes may take to stop before they are killed")
    return parser


def prepare(args: argparse.Namespace):
    """The Triton to start and the frontend's settings, sharing one Triton API secret (given or random)."""
    from pydantic import SecretStr  # noqa: PLC0415

    from frontend.settings import Settings  # noqa: PLC0415

    models = args.models.split(",") if args.models else model_names(args.repository)
    if not models:
        raise LaunchError(f"no models in {args.repository}: run `make export`")
    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    served = [m for m in served_models(args.repository) if m in models]
    settings = Settings(required_models=served, **overrides)  # MODELGATE_* from the environment and .env
    # Only the frontend (and whoever is given the secret) may load, unload or read configs through Triton.
    given = args.triton_api_secret or settings.triton_api_secret.get_secret_value()
    triton = TritonServer(args.repository, models, address=args.triton_address,
                          api_secret=given or secrets.token_urlsafe(32), http_port=args.triton_http_port,
                          grpc_port=args.triton_grpc_port, metrics_port=args.triton_metrics_port,
                          stop_timeout_s=args.shutdown_timeout_s, trace_url=args.triton_trace_url)
    settings = settings.model_copy(update={"triton_grpc_url": triton.grpc_url,
                                           "triton_api_secret": SecretStr(triton.api_secret)})
    return triton, settings, bool(given)


class Stop(BaseException):
    """SIGTERM or SIGINT outside uvicorn's own handling (while Triton starts, or re-raised by uvicorn once it
    has drained): unwinds to the shutdown. A BaseException, so no `except Exception` swallows it."""


@contextmanager
def stop_signals() -> Iterator[list[bool]]:
    """SIGTERM/SIGINT raise Stop until the shutdown begins (set the yielded flag); later ones are logged.
    uvicorn installs its own handlers while it serves and restores these after, re-raising what it caught."""
    stopping = [False]

    def handler(signum, frame):
        if stopping[0]:
            log.warning("%s: already shutting down", signal.Signals(signum).name)
            return
        stopping[0] = True
        raise Stop

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield stopping
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def serve(args: argparse.Namespace) -> int:
    """Triton, then the frontend; on a stop signal the reverse order: uvicorn stops accepting and lets the
    requests in flight finish (bounded), then Triton stops and its model processes are waited for."""
    import uvicorn  # noqa: PLC0415

    from frontend.app import create_app  # noqa: PLC0415
    from frontend.triton import TRITON_API_HEADER  # noqa: PLC0415

    triton, settings, given = prepare(args)
    server = uvicorn.Server(uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
        log_config=None, timeout_graceful_shutdown=max(1, int(args.shutdown_timeout_s))))
    status = 0

    def died(exit_status: int | None) -> None:  # --triton-restart=never: the platform restarts us
        nonlocal status
        log.error("tritonserver died (%s); exiting so that the platform restarts the service", exit_status)
        status = 1
        server.should_exit = True

    supervisor = Supervisor(triton, restart=args.triton_restart == "always", on_death=died)
    with stop_signals() as stopping:
        try:
            supervisor.start()
            print(f"Triton on {triton.address}: gRPC :{triton.grpc_port}, HTTP :{triton.http_port}, "
                  f"metrics {triton.metrics_url}; models: {', '.join(triton.models)}", flush=True)
            print(f"Triton's {', '.join(RESTRICTED_PROTOCOLS)} protocols need the {TRITON_API_HEADER} header "
                  f"({'the given secret' if given else 'a secret generated for this run'})", flush=True)
            print(f"OpenAI API: http://{settings.host}:{settings.port}/v1 "
                  f"(serving {', '.join(settings.required_models)})", flush=True)
            server.run()
        except Stop:
            pass
        finally:
            stopping[0] = True
            log.info("stopping tritonserver")
            supervisor.stop()
    return status


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
