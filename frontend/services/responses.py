"""The Responses API on the chat models: a request becomes a chat completion (frontend/services/chat.py does the
work: template, tools, structured outputs, images, usage), its answer becomes output items, and its stream the
Responses events in OpenAI's order. `store: true` keeps the response and its conversation
(frontend/response_store.py) for `GET`, `DELETE`, `input_items` and a later `previous_response_id`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from frontend.context import RequestContext
from frontend.errors import APIError, InvalidRequest, NotFound, validation_error
from frontend.protocol.chat import ChatCompletionRequest
from frontend.protocol.responses import ResponsesRequest
from frontend.response_store import ResponseStore
from frontend.services.chat import ChatService
from frontend.services.response_items import chat_messages, new_id, normalise, output_items, renamed, usage
from frontend.services.response_stream import Events

log = logging.getLogger(__name__)

class ResponsesService:
    def __init__(self, chat: ChatService, store: ResponseStore):
        self.chat = chat
        self.store = store

    async def create(self, request: ResponsesRequest, ctx: RequestContext,
                     is_disconnected: Callable[[], Awaitable[bool]]) -> dict | AsyncIterator[dict]:
        """The response object, or (stream=true) its events, started already."""
        history = await self._history(request, ctx)
        items = normalise(request.input)
        chat_request = self._chat_request(request, chat_messages(request.instructions, history + items))
        head = self._head(request)
        try:
            result = await self.chat.create(chat_request, ctx, is_disconnected)
        except APIError as error:
            raise renamed(error) from None
        record = {"history": history, "input": items}
        if request.stream:
            return self._events(request, Events(head), result, ctx, record)
        output, status = output_items(result)
        response = {**head, "model": result["model"], "status": status, "output": output,
                    "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
                    "usage": usage(result["usage"]), "completed_at": int(time.time())}
        await self._keep(request, ctx, response, record)
        return response

    async def _events(self, request: ResponsesRequest, events: Events, chunks: AsyncIterator[dict],
                      ctx: RequestContext, record: dict) -> AsyncIterator[dict]:
        try:
            async for event in events.of(chunks):
                if event["type"] in ("response.completed", "response.incomplete"):
                    await self._keep(request, ctx, events.response, record)  # before the client hears of it
                yield event
        finally:
            await chunks.aclose()

    async def _history(self, request: ResponsesRequest, ctx: RequestContext) -> list[dict]:
        """The conversation `previous_response_id` continues: its history, input and output items."""
        if request.previous_response_id is None:
            return []
        previous = await self.store.get(ctx.tenant, request.previous_response_id)
        if previous is None:
            raise NotFound(f"Previous response with id '{request.previous_response_id}' not found.",
                           param="previous_response_id")
        return previous["history"] + previous["input"] + previous["response"]["output"]

    @staticmethod
    def _chat_request(request: ResponsesRequest, messages: list[dict]) -> ChatCompletionRequest:
        body = {"model": request.model, "messages": messages, "stream": request.stream,
                "max_completion_tokens": request.max_output_tokens, "temperature": request.temperature,
                "top_p": request.top_p, "seed": request.seed, "top_k": request.top_k,
                "user": request.user or request.safety_identifier, "parallel_tool_calls": request.parallel_tool_calls,
                "tools": [t.chat_tool() for t in request.function_tools()] or None,
                "tool_choice": request.chat_tool_choice(),
                "response_format": request.text.format.response_format() if request.text and request.text.format
                else None,
                "stream_options": {"include_usage": True} if request.stream else None}
        try:
            return ChatCompletionRequest.model_validate({k: v for k, v in body.items() if v is not None})
        except ValidationError as exc:
            raise renamed(validation_error(RequestValidationError(exc.errors()))) from None

    @staticmethod
    def _head(request: ResponsesRequest) -> dict:
        """The response object's fields known before the model answers."""
        return {
            "id": new_id("resp"), "object": "response", "created_at": int(time.time()), "status": "in_progress",
            "background": False, "error": None, "incomplete_details": None, "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens, "model": request.model, "output": [],
            "parallel_tool_calls": request.parallel_tool_calls, "previous_response_id": request.previous_response_id,
            "reasoning": {"effort": None, "summary": None}, "store": request.store,
            "temperature": request.temperature, "text": {"format": (request.text.format.model_dump(
                by_alias=True, exclude_none=True) if request.text and request.text.format else {"type": "text"})},
            "tool_choice": request.tool_choice.model_dump() if hasattr(request.tool_choice, "model_dump")
            else request.tool_choice or "auto",
            "tools": [t.model_dump(exclude_none=True) for t in request.function_tools()],
            "top_p": request.top_p, "truncation": "disabled", "usage": None, "user": request.user,
            "metadata": request.metadata or {},
        }

    async def _keep(self, request: ResponsesRequest, ctx: RequestContext, response: dict, record: dict) -> None:
        if request.store:
            await self.store.put(ctx.tenant, response["id"], {**record, "response": response})

    async def _record(self, response_id: str, ctx: RequestContext) -> dict:
        record = await self.store.get(ctx.tenant, response_id)
        if record is None:
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
        return record

    async def retrieve(self, response_id: str, ctx: RequestContext) -> dict:
        return (await self._record(response_id, ctx))["response"]

    async def delete(self, response_id: str, ctx: RequestContext) -> dict:
        if not await self.store.delete(ctx.tenant, response_id):
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
        return {"id": response_id, "object": "response", "deleted": True}

    async def input_items(self, response_id: str, ctx: RequestContext, *, limit: int = 20, order: str = "desc",
                          after: str | None = None) -> dict:
        """The items this response was given (its previous responses' are theirs), as OpenAI pages them."""
        items = (await self._record(response_id, ctx))["input"]
        items = items[::-1] if order == "desc" else items
        if after is not None:
            ids = [item["id"] for item in items]
            if after not in ids:
                raise InvalidRequest(f"no input item `{after}` in this response", param="after")
            items = items[ids.index(after) + 1:]
        page = items[:limit]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}
