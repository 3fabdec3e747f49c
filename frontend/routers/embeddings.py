from fastapi import APIRouter, Request

from frontend.context import context_of
from frontend.openapi import INFERENCE, errors
from frontend.protocol.embeddings import EmbeddingRequest, EmbeddingResponse
from frontend.responses import FastJSONResponse

router = APIRouter()


@router.post("/v1/embeddings", response_model=EmbeddingResponse, response_class=FastJSONResponse,
             responses=errors(*INFERENCE))
async def create_embeddings(body: EmbeddingRequest, request: Request):
    result = await request.app.state.services.embeddings.create(body, context_of(request))
    return FastJSONResponse(result)
