"""The request id in every log line: a context variable set per request, copied onto each log record.

`install()` wraps the log record factory, so every record (any logger, any handler, pytest's caplog too)
carries `request_id` ("-" outside a request) and FORMAT can print it.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("modelgate_request_id", default="-")

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def install() -> None:
    """Idempotent: wrap the current record factory once."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "_modelgate", False):
        return

    def with_request_id(*args, **kwargs) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        record.request_id = request_id_var.get()
        return record

    with_request_id._modelgate = True
    logging.setLogRecordFactory(with_request_id)


def configure(level: str = "info") -> None:
    """Root logging with the request id; uvicorn's loggers propagate to it when run with log_config=None."""
    install()
    logging.basicConfig(level=level.upper(), format=FORMAT)


install()
