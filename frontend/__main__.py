"""`python -m frontend`: serve the app with uvicorn on MODELGATE_HOST:MODELGATE_PORT."""

import uvicorn

from frontend import logs
from frontend.app import create_app
from frontend.settings import Settings


def main() -> None:
    settings = Settings()
    logs.configure(settings.log_level)  # the request id in every line, uvicorn's access log included
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                log_config=None)


if __name__ == "__main__":
    main()
