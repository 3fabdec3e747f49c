from typing import Literal

from fastapi import APIRouter, Query, Request

from frontend.context import context_of
from frontend.openapi import INFERENCE, errors, streaming
from frontend.protocol.responses import ResponsesRequest
from frontend.responses import EventStreamResponse, FastJSONResponse, named_event_stream

router = APIRouter()


@router.post("/v1/responses", responses=streaming(*INFERENCE))
async def create_response(body: ResponsesRequest, request: Request):
    result = await request.app.state.services.responses.create(body, context_of(request), request.is_disconnected)
    return EventStreamResponse(result, named_event_stream) if body.stream else FastJSONResponse(result)


@router.get("/v1/responses/{response_id}", responses=errors(401, 403, 404, 429))
async def retrieve_response(response_id: str, request: Request):
    return FastJSONResponse(await request.app.state.services.responses.retrieve(response_id, context_of(request)))


@router.delete("/v1/responses/{response_id}", responses=errors(401, 403, 404, 429))
async def delete_response(response_id: str, request: Request):
    return FastJSONResponse(await request.app.state.services.responses.delete(response_id, context_of(request)))


@router.get("/v1/responses/{response_id}/input_items", responses=errors(400, 401, 403, 404, 429))
async def list_input_items(response_id: str, request: Request, limit: int = Query(20, ge=1, le=100),
                           order: Literal["asc", "desc"] = "desc", after: str | None = None):
    return FastJSONResponse(await request.app.state.services.responses.input_items(
        response_id, context_of(request), limit=limit, order=order, after=after))
