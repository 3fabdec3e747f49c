"""Response encoding shared by every endpoint: fast JSON (numpy arrays included) and SSE framing."""

from __future__ import annotations

import orjson
from fastapi.responses import JSONResponse


class FastJSONResponse(JSONResponse):
    """orjson, serialising numpy arrays directly (an embedding batch is thousands of floats)."""

    def render(self, content) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
