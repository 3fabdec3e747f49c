"""Chat completions: messages -> the model's chat template -> one Triton generation -> OpenAI's objects."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from frontend.chat_template import render_chat
from frontend.context import RequestContext
from frontend.errors import InvalidRequest
from frontend.images_fetch import ImageFetcher
from frontend.protocol.chat import ChatCompletionRequest, ChatMessage, ContentPart, ImageURL
from frontend.registry import ModelRegistry
from frontend.services.generation import (
    TASKS_CHAT,
    Generation,
    Tally,
    TokenLogprob,
    assemble,
    cache_salt,
    now,
    response_id,
    sampling_parameters,
)
from frontend.services.images import cancel_on_disconnect
from frontend.triton import Backend

log = logging.getLogger(__name__)

# Roles the template sees as they are; OpenAI's `developer` is the newer name of `system`.
TEMPLATE_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# Message fields that belong to tool calling (not supported yet): refused by name, never dropped.
TOOL_FIELDS = ("tool_calls", "tool_call_id", "function_call", "audio")


def template_messages(messages: list[ChatMessage], images: list[tuple[str, ImageURL]] | None = None) -> list[dict]:
    """Messages as chat templates expect them: role and a string content (text parts joined by newlines).

    For a model that takes images pass `images`, a list: content is then a list of parts as multimodal
    templates expect (`{"type": "text", "text"}`, `{"type": "image"}` where an image goes), and each
    image_url part is appended to `images` as (its param path, its ImageURL), in prompt order.
    """
    result = []
    for i, message in enumerate(messages):
        if message.role not in TEMPLATE_ROLES:
            raise InvalidRequest(f"messages[{i}]: role `{message.role}` is not supported (no tool calling yet)",
                                 param=f"messages[{i}].role", code="unsupported_parameter")
        extra = message.model_extra or {}
        refused = next((k for k in TOOL_FIELDS if extra.get(k) not in (None, [])), None)
        if refused:
            raise InvalidRequest(f"messages[{i}].{refused} is not supported by this server",
                                 param=f"messages[{i}].{refused}", code="unsupported_parameter")
        content = message.content
        if images is not None:
            content = multimodal_content(content, i, images)
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if part.type != "text" or part.text is None:
                    what = ("this model does not accept images" if part.type == "image_url"
                            else f"content of type `{part.type}` is not supported by this model")
                    raise InvalidRequest(f"messages[{i}].content[{j}]: {what}; send text parts",
                                         param=f"messages[{i}].content[{j}].type", code="unsupported_parameter")
            content = "\n".join(part.text for part in content)
        entry = {"role": TEMPLATE_ROLES[message.role], "content": content or ""}
        if message.name:
            entry["name"] = message.name
        result.append(entry)
    return result


def multimodal_content(content: str | list[ContentPart] | None, i: int,
                       images: list[tuple[str, ImageURL]]) -> list[dict]:
    if not isinstance(content, list):
        return [{"type": "text", "text": content or ""}]
    parts = []
    for j, part in enumerate(content):
        if part.type == "text" and part.text is not None:
            parts.append({"type": "text", "text": part.text})
        elif part.type == "image_url" and part.image_url is not None:
            images.append((f"messages[{i}].content[{j}].image_url", part.image_url))
            parts.append({"type": "image"})
        else:
            raise InvalidRequest(f"messages[{i}].content[{j}]: content of type `{part.type}` is not supported; "
                                 "send text and image_url parts",
                                 param=f"messages[{i}].content[{j}].type", code="unsupported_parameter")
    return parts


def chat_logprobs(tokens: list[TokenLogprob]) -> dict:
    def item(token: str, logprob: float) -> dict:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {"content": [{**item(t.token, t.logprob), "top_logprobs": [item(s, lp) for s, lp in t.top]}
                        for t in tokens], "refusal": None}


class ChatService:
    def __init__(self, backend: Backend, registry: ModelRegistry, images: ImageFetcher | None = None,
                 shared_prefix_cache: bool = False):
        self.backend = backend
        self.registry = registry
        self.images = images
        self.shared_prefix_cache = shared_prefix_cache

    async def _load_images(self, model, parts: list[tuple[str, ImageURL]]) -> list[bytes]:
        """The request's images as bytes (fetched concurrently), within the model's per-request limit."""
        limit = model.int_param("max_images")
        if limit is not None and len(parts) > limit:
            raise InvalidRequest(f"{len(parts)} images sent; `{model.name}` takes at most {limit} per request",
                                 param="messages", code="too_many_images")
        if parts and self.images is None:
            raise InvalidRequest("this server does not accept images", param=parts[0][0])
        return await self.images.load_all([(param, url.url) for param, url in parts])

    async def create(self, request: ChatCompletionRequest, ctx: RequestContext,
                     is_disconnected: Callable[[], Awaitable[bool]]) -> dict | AsyncIterator[dict]:
        """A `chat.completion` dict, or (stream=true) the `chat.completion.chunk` dicts, started already."""
        model = await self.registry.get(request.model, *TASKS_CHAT)
        parts = [] if model.parameters.get("supports_images") == "true" else None
        prompt = render_chat(model.parameters, template_messages(request.messages, parts), model=model.name)
        images = await self._load_images(model, parts or [])
        top = (request.top_logprobs or 0) if request.logprobs else None
        params = sampling_parameters(request, request.completion_limit, top,
                                     cache_salt(model, ctx, self.shared_prefix_cache, request.cache_salt))
        log.info("chat: model=%s n=%d stream=%s user=%s request=%s", model.name, request.n, request.stream,
                 request.user, ctx.request_id)
        generation = Generation(self.backend, model.name, prompt, params, stream=request.stream,
                                top_logprobs=top, request_id=ctx.request_id, param="messages", images=images,
                                usage=ctx.usage)
        ctx.on_close(generation.aclose)  # even if the response never starts, its Triton stream is closed
        head = {"id": response_id("chatcmpl"), "created": now(), "model": model.name, "system_fingerprint": None}
        if request.stream:
            await cancel_on_disconnect(generation.start(), is_disconnected)  # queued: may wait for a slot
            return self._chunks(generation, head, request.n, request.include_usage)
        steps = await cancel_on_disconnect(generation.collect(), is_disconnected)
        tally = Tally()
        for step in steps:
            tally.add(0, step)
        choices = [{"index": i, "message": {"role": "assistant", "content": c.text, "refusal": None},
                    "logprobs": chat_logprobs(c.logprobs) if top is not None else None,
                    "finish_reason": c.finish_reason}
                   for i, c in enumerate(assemble(steps, request.n))]
        return {**head, "object": "chat.completion", "choices": choices, "usage": tally.usage()}

    async def _chunks(self, generation: Generation, head: dict, n: int, include_usage: bool) -> AsyncIterator[dict]:
        head = {**head, "object": "chat.completion.chunk"}
        extra = {"usage": None} if include_usage else {}

        def chunk(index: int, delta: dict, logprobs=None, finish_reason=None) -> dict:
            return {**head, "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                                         "finish_reason": finish_reason}], **extra}

        for i in range(n):
            yield chunk(i, {"role": "assistant", "content": "", "refusal": None})
        tally = Tally()
        async for step in generation.steps():
            tally.add(0, step)
            for i in range(n):
                logprobs = step.logprobs[i] if step.logprobs is not None else None
                if step.texts[i] or logprobs:
                    yield chunk(i, {"content": step.texts[i]}, chat_logprobs(logprobs) if logprobs is not None
                                else None)
                if step.finish_reasons is not None:
                    yield chunk(i, {}, finish_reason=step.finish_reasons[i])
        if include_usage:
            yield {**head, "choices": [], "usage": tally.usage()}
