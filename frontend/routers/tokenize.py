from fastapi import APIRouter, Request

from frontend.context import context_of
from frontend.openapi import errors
from frontend.protocol.tokenize import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from frontend.responses import FastJSONResponse

router = APIRouter()
# vLLM's paths (no /v1): clients written for vLLM find them where they expect. No model work, no 504 or 413
# beyond the body limit every route has.
TOKENIZER_ERRORS = (400, 401, 403, 404, 413, 429, 503)


@router.post("/tokenize", response_model=TokenizeResponse, response_class=FastJSONResponse,
             responses=errors(*TOKENIZER_ERRORS))
async def tokenize(body: TokenizeRequest, request: Request):
    return FastJSONResponse(await request.app.state.services.tokenize.tokenize(body, context_of(request)))


@router.post("/detokenize", response_model=DetokenizeResponse, response_class=FastJSONResponse,
             responses=errors(*TOKENIZER_ERRORS))
async def detokenize(body: DetokenizeRequest, request: Request):
    return FastJSONResponse(await request.app.state.services.tokenize.detokenize(body, context_of(request)))
