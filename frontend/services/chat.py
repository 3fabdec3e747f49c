"""Chat completions: messages -> the model's chat template -> one Triton generation -> OpenAI's objects."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from frontend.chat_template import render_chat
from frontend.context import RequestContext
from frontend.errors import InvalidRequest
from frontend.images_fetch import ImageFetcher
from frontend.protocol.chat import ChatCompletionRequest, ChatMessage, ContentPart, ImageURL
from frontend.registry import ModelRegistry, ServedModel
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
from frontend.tools import StreamParser, arguments_as_objects, template_renders_tools, tool_format
from frontend.triton import Backend

log = logging.getLogger(__name__)

# Roles the template sees as they are; OpenAI's `developer` is the newer name of `system`.
TEMPLATE_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
                  "tool": "tool"}
# Message fields of the legacy function-calling API and of audio: refused by name, never dropped.
REFUSED_FIELDS = ("function_call", "audio")


def template_messages(messages: list[ChatMessage], images: list[tuple[str, ImageURL]] | None = None) -> list[dict]:
    """Messages as chat templates expect them: role and a string content (text parts joined by newlines).

    For a model that takes images pass `images`, a list: content is then a list of parts as multimodal
    templates expect (`{"type": "text", "text"}`, `{"type": "image"}` where an image goes), and each
    image_url part is appended to `images` as (its param path, its ImageURL), in prompt order.
    """
    result = []
    for i, message in enumerate(messages):
        if message.role not in TEMPLATE_ROLES:
            raise InvalidRequest(f"messages[{i}]: role `{message.role}` is not supported (use `tool`)",
                                 param=f"messages[{i}].role", code="unsupported_parameter")
        extra = message.model_extra or {}
        refused = next((k for k in REFUSED_FIELDS if extra.get(k) not in (None, [])), None)
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
        entry.update(tool_fields(extra, i))
        result.append(entry)
    return result


def tool_fields(extra: dict, i: int) -> dict:
    """An assistant message's `tool_calls` and a tool message's `tool_call_id`, checked for their shape."""
    fields = {}
    calls = extra.get("tool_calls")
    if calls not in (None, []):
        if not isinstance(calls, list) or not all(
                isinstance(c, dict) and isinstance(c.get("function"), dict)
                and isinstance(c["function"].get("name"), str) for c in calls):
            raise InvalidRequest(f"messages[{i}].tool_calls: each needs a function with a name and arguments",
                                 param=f"messages[{i}].tool_calls")
        fields["tool_calls"] = calls
    if isinstance(extra.get("tool_call_id"), str):
        fields["tool_call_id"] = extra["tool_call_id"]
    return fields


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


def chat_prompt(model: ServedModel, messages: list[ChatMessage], tools: list[dict] | None = None,
                add_generation_prompt: bool = True) -> tuple[str, list[tuple[str, ImageURL]] | None]:
    """The prompt the engine gets for `messages` under the model's chat template (`tools`: those the model may
    call), and the image_url parts in prompt order (None: the model takes no images). /tokenize renders with
    it too, so its count is the engine's."""
    parts = [] if model.parameters.get("supports_images") == "true" else None
    rendered = template_messages(messages, parts)
    if template_renders_tools(model.parameters.get("chat_template", "")):
        return render_chat(model.parameters, arguments_as_objects(rendered), model=model.name, tools=tools,
                           add_generation_prompt=add_generation_prompt), parts
    if tools or any("tool_calls" in m or m["role"] == "tool" for m in rendered):  # the format's instructions
        rendered = tool_format(model.parameters, model.name).generic_messages(rendered, tools or [])
    return render_chat(model.parameters, rendered, model=model.name,
                       add_generation_prompt=add_generation_prompt), parts


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
        tools = [t.model_dump(exclude_none=True) for t in request.tools] if request.calls_tools else None
        call_format = tool_format(model.parameters, model.name)
        prompt, parts = chat_prompt(model, request.messages, tools)
        images = await self._load_images(model, parts or [])
        top = (request.top_logprobs or 0) if request.logprobs else None
        params = sampling_parameters(request, request.completion_limit, top,
                                     cache_salt(model, ctx, self.shared_prefix_cache, request.cache_salt),
                                     structured=request.tool_constraint(call_format))
        log.info("chat: model=%s n=%d stream=%s user=%s request=%s", model.name, request.n, request.stream,
                 request.user, ctx.request_id)
        generation = Generation(self.backend, model.name, prompt, params, stream=request.stream,
                                top_logprobs=top, request_id=ctx.request_id, param="messages", images=images,
                                usage=ctx.usage)
        ctx.on_close(generation.aclose)  # even if the response never starts, its Triton stream is closed
        head = {"id": response_id("chatcmpl"), "created": now(), "model": model.name, "system_fingerprint": None}
        if request.stream:
            await cancel_on_disconnect(generation.start(), is_disconnected)  # queued: may wait for a slot
            parsers = [call_format.stream_parser(request.tool_names) for _ in range(request.n)] \
                if request.calls_tools else None
            return self._chunks(generation, head, request.n, request.include_usage, parsers)
        steps = await cancel_on_disconnect(generation.collect(), is_disconnected)
        tally = Tally()
        for step in steps:
            tally.add(0, step)
        choices = []
        for i, c in enumerate(assemble(steps, request.n)):
            message, finish = {"role": "assistant", "content": c.text, "refusal": None}, c.finish_reason
            if request.calls_tools:
                message["content"], tool_calls = call_format.parse(c.text, request.tool_names)
                if tool_calls:
                    message["tool_calls"] = tool_calls
                    finish = "tool_calls" if finish == "stop" else finish
            choices.append({"index": i, "message": message, "finish_reason": finish,
                            "logprobs": chat_logprobs(c.logprobs) if top is not None else None})
        return {**head, "object": "chat.completion", "choices": choices, "usage": tally.usage()}

    async def _chunks(self, generation: Generation, head: dict, n: int, include_usage: bool,
                      parsers: list[StreamParser] | None = None) -> AsyncIterator[dict]:
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
                lp = chat_logprobs(logprobs) if logprobs is not None else None
                if parsers is None:
                    if step.texts[i] or logprobs:
                        yield chunk(i, {"content": step.texts[i]}, lp)
                else:
                    events = parsers[i].feed(step.texts[i])
                    if step.finish_reasons is not None:
                        events += parsers[i].flush()
                    for delta in tool_deltas(events, parsers[i]):
                        yield chunk(i, delta, lp)
                        lp = None
                    if lp is not None:
                        yield chunk(i, {"content": ""}, lp)
                if step.finish_reasons is not None:
                    finish = step.finish_reasons[i]
                    if parsers is not None and parsers[i].calls and finish == "stop":
                        finish = "tool_calls"
                    yield chunk(i, {}, finish_reason=finish)
        if include_usage:
            yield {**head, "choices": [], "usage": tally.usage()}


def tool_deltas(events: list[tuple[str, object]], parser: StreamParser) -> list[dict]:
    """OpenAI's streamed deltas for parsed events: text as content; a call as its index, id and name first, then
    its arguments."""
    deltas, index = [], parser.calls - sum(kind == "call" for kind, _ in events)
    for kind, value in events:
        if kind == "content":
            if value:
                deltas.append({"content": value})
            continue
        function = value["function"]
        deltas.append({"tool_calls": [{"index": index, "id": value["id"], "type": "function",
                                       "function": {"name": function["name"], "arguments": ""}}]})
        deltas.append({"tool_calls": [{"index": index, "function": {"arguments": function["arguments"]}}]})
        index += 1
    return deltas
