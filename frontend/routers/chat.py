from fastapi import APIRouter, Request

from frontend.context import context_of
from frontend.openapi import INFERENCE, streaming
from frontend.protocol.chat import ChatCompletion, ChatCompletionRequest
from frontend.responses import EventStreamResponse, FastJSONResponse

router = APIRouter()


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=streaming(*INFERENCE))
async def create_chat_completion(body: ChatCompletionRequest, request: Request):
    result = await request.app.state.services.chat.create(body, context_of(request), request.is_disconnected)
    return EventStreamResponse(result) if body.stream else FastJSONResponse(result)
