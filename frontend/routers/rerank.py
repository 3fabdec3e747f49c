from fastapi import APIRouter, Request

from frontend.context import context_of
from frontend.openapi import INFERENCE, errors
from frontend.protocol.rerank import RerankRequest, RerankResponse, ScoreRequest, ScoreResponse
from frontend.responses import FastJSONResponse

router = APIRouter()

# vLLM's aliases, left out of the published schema: Cohere's SDK v2 posts to base_url + "/v2/rerank"; vLLM
# documents `/rerank` and `/score`. Each is authenticated, limited, cached and metered as the /v1 path is.
HIDDEN = {"include_in_schema": False, "response_class": FastJSONResponse}


@router.post("/v1/rerank", response_model=RerankResponse, response_class=FastJSONResponse,
             responses=errors(*INFERENCE))
@router.post("/v2/rerank", **HIDDEN)
@router.post("/rerank", **HIDDEN)
async def rerank(body: RerankRequest, request: Request):
    return FastJSONResponse(await request.app.state.services.rerank.rerank(body, context_of(request)))


@router.post("/v1/score", response_model=ScoreResponse, response_class=FastJSONResponse,
             responses=errors(*INFERENCE))
@router.post("/score", **HIDDEN)
async def score(body: ScoreRequest, request: Request):
    return FastJSONResponse(await request.app.state.services.rerank.score(body, context_of(request)))
