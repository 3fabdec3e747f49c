from fastapi import APIRouter, Request

from frontend.context import context_of
from frontend.openapi import INFERENCE, streaming
from frontend.protocol.completions import Completion, CompletionRequest
from frontend.responses import EventStreamResponse, FastJSONResponse

router = APIRouter()


@router.post("/v1/completions", response_model=Completion, responses=streaming(*INFERENCE))
async def create_completion(body: CompletionRequest, request: Request):
    result = await request.app.state.services.completions.create(body, context_of(request),
                                                                 request.is_disconnected)
    return EventStreamResponse(result) if body.stream else FastJSONResponse(result)
