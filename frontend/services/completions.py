"""Text completions: each prompt is one Triton generation of `n` choices; choice index = prompt * n + choice."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from frontend.context import RequestContext
from frontend.errors import InvalidRequest
from frontend.protocol.completions import CompletionRequest
from frontend.registry import ModelRegistry
from frontend.services.generation import (
    TASKS_COMPLETIONS,
    Generation,
    Tally,
    cache_salt,
    collect_all,
    TokenLogprob,
    assemble,
    merged,
    now,
    response_id,
    sampling_parameters,
    start_all,
)
from frontend.services.images import cancel_on_disconnect
from frontend.triton import Backend

log = logging.getLogger(__name__)


def completion_logprobs(tokens: list[TokenLogprob], offset: int) -> dict:
    """OpenAI's legacy shape; `text_offset` counts characters of the choice's text from `offset`."""
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token.token)
    return {
        "tokens": [t.token for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [dict(t.top) if t.top else {t.token: t.logprob} for t in tokens],
        "text_offset": offsets,
    }


class CompletionService:
    def __init__(self, backend: Backend, registry: ModelRegistry, shared_prefix_cache: bool = False,
                 max_prompts: int = 32):
        self.backend = backend
        self.registry = registry
        self.shared_prefix_cache = shared_prefix_cache
        self.max_prompts = max_prompts

    async def create(self, request: CompletionRequest, ctx: RequestContext,
                     is_disconnected: Callable[[], Awaitable[bool]]) -> dict | AsyncIterator[dict]:
        """A `text_completion` dict, or (stream=true) its chunks, every generation started already."""
        if len(request.prompts) > self.max_prompts:
            raise InvalidRequest(f"at most {self.max_prompts} prompts per request, got {len(request.prompts)}",
                                 param="prompt")
        model = await self.registry.get(request.model, *TASKS_COMPLETIONS)
        if request.echo and request.logprobs is not None:
            raise InvalidRequest("echo with logprobs is not supported (no prompt logprobs)", param="echo",
                                 code="unsupported_parameter")
        params = sampling_parameters(request, request.max_tokens, request.logprobs,
                                     cache_salt(model, ctx, self.shared_prefix_cache, request.cache_salt))
        log.info("completions: model=%s prompts=%d n=%d stream=%s user=%s request=%s", model.name,
                 len(request.prompts), request.n, request.stream, request.user, ctx.request_id)
        generations = [Generation(self.backend, model.name, prompt, params, stream=request.stream,
                                  top_logprobs=request.logprobs, request_id=ctx.request_id, param="prompt",
                                  usage=ctx.usage)
                       for prompt in request.prompts]
        for generation in generations:  # even if the response never starts, their Triton streams are closed
            ctx.on_close(generation.aclose)
        head = {"id": response_id("cmpl"), "object": "text_completion", "created": now(), "model": model.name,
                "system_fingerprint": None}
        if request.stream:
            await cancel_on_disconnect(start_all(generations), is_disconnected)
            return self._chunks(generations, request, head)
        results = await cancel_on_disconnect(collect_all(generations), is_disconnected)
        tally, choices = Tally(), []
        for p, (prompt, steps) in enumerate(zip(request.prompts, results)):
            for step in steps:
                tally.add(p, step)
            echo = prompt if request.echo else ""
            for j, c in enumerate(assemble(steps, request.n)):
                choices.append({"index": p * request.n + j, "text": echo + c.text,
                                "logprobs": completion_logprobs(c.logprobs, len(echo))
                                if request.logprobs is not None else None,
                                "finish_reason": c.finish_reason})
        return {**head, "choices": choices, "usage": tally.usage()}

    async def _chunks(self, generations: list[Generation], request: CompletionRequest,
                      head: dict) -> AsyncIterator[dict]:
        n = request.n
        extra = {"usage": None} if request.include_usage else {}
        offsets = [0] * (len(generations) * n)  # characters sent so far per choice, for text_offset

        def chunk(index: int, text: str, logprobs=None, finish_reason=None) -> dict:
            offsets[index] += len(text)
            return {**head, "choices": [{"index": index, "text": text, "logprobs": logprobs,
                                         "finish_reason": finish_reason}], **extra}

        if request.echo:
            for p, prompt in enumerate(request.prompts):
                for j in range(n):
                    yield chunk(p * n + j, prompt)
        tally = Tally()
        async for p, step in merged(generations):
            tally.add(p, step)
            for j in range(n):
                index = p * n + j
                tokens = step.logprobs[j] if step.logprobs is not None else None
                reason = step.finish_reasons[j] if step.finish_reasons is not None else None
                if step.texts[j] or tokens or reason:
                    logprobs = completion_logprobs(tokens, offsets[index]) if tokens is not None else None
                    yield chunk(index, step.texts[j], logprobs, reason)
        if request.include_usage:
            yield {**head, "choices": [], "usage": tally.usage()}
