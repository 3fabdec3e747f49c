"""Container HEALTHCHECK: exit 0 when GET <url> answers 2xx (stdlib only, no curl in slim images).

`python healthcheck.py` checks the frontend's /health on MODELGATE_PORT; the Triton image passes
http://127.0.0.1:8000/v2/health/ready.
"""

import os
import sys
import urllib.request

DEFAULT_URL = f"http://127.0.0.1:{os.environ.get('MODELGATE_PORT', '8000')}/health"


def main() -> int:
    url = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_URL
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 (loopback URL)
            return 0 if 200 <= response.status < 300 else 1
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
