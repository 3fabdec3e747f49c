"""`python -m frontend`: serve the app with uvicorn on MODELGATE_HOST:MODELGATE_PORT."""

import logging

import uvicorn

from frontend.app import create_app
from frontend.settings import Settings


def main() -> None:
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
