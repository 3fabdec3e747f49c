"""What chat and text completions share: sampling parameters, the Triton LLM contract, streams, usage, logprobs.

The chat model speaks the vLLM backend's tensors (triton_models/llm/model.py): one prompt per request,
`sampling_parameters` as JSON, per-response deltas of text and token counts, `finish_reason` on the final
response, `logprobs` as JSON per sequence. A `Generation` is one such request. It is *started* (its first
response awaited) before any HTTP byte goes out, so a prompt over the context or an overloaded engine
still gets its real status code; later errors travel inside the stream.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

from frontend.context import RequestContext
from frontend.errors import APIError, InvalidRequest
from frontend.protocol.generation import GenerationRequest
from frontend.registry import ServedModel
from frontend.triton import Backend, Tensors
from frontend.usage import Usage
from triton_models.contract import CONTEXT_LENGTH_EXCEEDED, LOGIT_BIAS, STRUCTURED_OUTPUTS

TASKS_CHAT = ("chat",)
TASKS_COMPLETIONS = ("completions", "chat")  # a chat model completes plain prompts too
# The LLM contract (checked by tests/contract/test_llm_contract.py on the exporter's side).
OUTPUTS = ["text_output", "finish_reason", "num_input_tokens", "num_output_tokens", "logprobs"]
FLAGS = ("return_finish_reason", "return_num_input_tokens", "return_num_output_tokens")
FINISH_REASONS = ("stop", "length")
MIN_LOGPROB = -9999.0  # what OpenAI reports for a token with no probability (JSON has no -inf)


def cache_salt(model: ServedModel, ctx: RequestContext, shared: bool, requested: str | None) -> str | None:
    """The engine's `cache_salt`: the tenant's (unless the prefix cache is shared), refined by the request's
    own salt. Requests share cached prefixes only when their salts are equal. A model that takes no salt (the
    vLLM backend) gets none; asking it for one is refused by name."""
    if not model.takes_cache_salt:
        if requested is not None:
            raise InvalidRequest(f"`{model.name}` does not take cache_salt", param="cache_salt",
                                 code="unsupported_parameter")
        return None
    tenant = ctx.tenant_salt(shared)
    if requested is None:
        return tenant
    return hashlib.sha256(f"{tenant or ''}\0{requested}".encode()).hexdigest()[:32]


def sampling_parameters(request: GenerationRequest, max_tokens: int | None, logprobs: int | None,
                        salt: str | None = None, structured: dict | None = None) -> dict:
    """The `sampling_parameters` JSON: an explicit list of fields, unset ones left to the model's defaults.

    No max_tokens means "the rest of the context" (the engine knows the prompt's length; 16, OpenAI's
    legacy default, cuts most answers short). `structured`: a constraint of the service's own (tool calls) in
    place of the request's fields.
    """
    values = {
        "temperature": request.temperature, "top_p": request.top_p, "top_k": request.top_k, "seed": request.seed,
        "stop": request.stop, "max_tokens": max_tokens, "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty, "n": request.n, "logprobs": logprobs,
        "ignore_eos": request.ignore_eos or None, "cache_salt": salt,
    }
    values[STRUCTURED_OUTPUTS] = structured or request.structured_outputs()
    values[LOGIT_BIAS] = request.logit_bias or None
    return {k: v for k, v in values.items() if v is not None}


def triton_inputs(prompt: str, params: dict, *, stream: bool, logprobs: bool, images: list[bytes] = ()) -> Tensors:
    """`images` (raw bytes) go to the vLLM backend's `image` input, base64-encoded, in prompt order."""
    flag = np.array([True])
    inputs = {
        "text_input": np.array([prompt.encode("utf-8")], dtype=np.object_),
        "stream": np.array([stream]),
        "sampling_parameters": np.array([json.dumps(params).encode()], dtype=np.object_),
        "exclude_input_in_output": flag,
        **{name: flag for name in FLAGS},
    }
    if logprobs:
        inputs["return_logprobs"] = flag
    if images:
        inputs["image"] = np.array([base64.b64encode(image) for image in images], dtype=np.object_)
    return inputs


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float]]


@dataclass
class Step:
    """One Triton response: per-choice text deltas and token counts (deltas), reasons on the last one."""

    texts: list[str]
    counts: list[int]
    prompt_tokens: int
    finish_reasons: list[str] | None = None
    logprobs: list[list[TokenLogprob]] | None = None


def _logprob(value) -> float:
    value = float(value)
    return value if math.isfinite(value) else MIN_LOGPROB


def token_logprobs(entries: list[dict], top_k: int, text: str) -> list[TokenLogprob]:
    """The vLLM backend's per-token dicts `{token_id: {logprob, rank, decoded_token}}` as (token, top) pairs.

    Each dict holds the top `top_k` tokens and the sampled one. When the sampled token is not among the top it
    is the extra (last) entry; otherwise the contract does not say which it is, so the candidates are chosen
    such that their texts spell the generated `text` (best-ranked first where several do).
    """
    options = [[entry[list(entry)[-1]]] if len(entry) > top_k else sorted(entry.values(), key=lambda e: e["rank"])
               for entry in entries]
    sampled = _spelling(options, text)
    result = []
    for entry, chosen in zip(entries, sampled):
        ranked = sorted(entry.values(), key=lambda e: e["rank"])
        top = [(c["decoded_token"], _logprob(c["logprob"])) for c in ranked if c["rank"] <= top_k][:top_k]
        result.append(TokenLogprob(chosen["decoded_token"], _logprob(chosen["logprob"]), top))
    return result


def _spelling(options: list[list[dict]], text: str) -> list[dict]:
    """One candidate per position whose texts concatenate to (the longest possible prefix of) `text`."""
    layers: list[dict[int, tuple[int, dict]]] = []  # per position: end offset -> (start offset, candidate)
    ends = {0}
    for candidates in options:
        layer: dict[int, tuple[int, dict]] = {}
        for pos in sorted(ends):
            for candidate in candidates:
                token = candidate["decoded_token"]
                if text.startswith(token, pos) and pos + len(token) not in layer:
                    layer[pos + len(token)] = (pos, candidate)
        if not layer:  # the text stops matching (stop strings, held-back bytes): best-ranked from here on
            break
        layers.append(layer)
        ends = set(layer)
    chosen: list[dict] = []
    pos = len(text) if len(text) in ends else max(ends)
    for layer in reversed(layers):
        pos, candidate = layer[pos]
        chosen.append(candidate)
    chosen.reverse()
    return chosen + [candidates[0] for candidates in options[len(chosen):]]


def parse_step(outputs: Tensors, top_k: int | None) -> Step:
    texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in outputs["text_output"].reshape(-1)]
    counts = [int(c) for c in outputs["num_output_tokens"].reshape(-1)]
    reasons = outputs.get("finish_reason")
    finish = None
    if reasons is not None:
        finish = [r.decode() if isinstance(r, bytes) else str(r) for r in reasons.reshape(-1)]
        unknown = [r for r in finish if r not in FINISH_REASONS]
        if unknown:
            raise APIError(f"generation ended unexpectedly ({unknown[0]})")
    logprobs = None
    if top_k is not None and outputs.get("logprobs") is not None:
        logprobs = [token_logprobs(json.loads(raw), top_k, text)
                    for raw, text in zip(outputs["logprobs"].reshape(-1), texts)]
    return Step(texts, counts, int(outputs["num_input_tokens"].reshape(-1)[0]), finish, logprobs)


class Generation:
    """One prompt's decoupled Triton request. `start()` awaits its first response; `steps()` yields them all.

    Leaving `steps()` early (a client that disconnects) closes the Triton stream, which cancels the request.
    """

    def __init__(self, backend: Backend, model: str, prompt: str, params: dict, *, stream: bool,
                 top_logprobs: int | None, request_id: str, param: str, images: list[bytes] = (),
                 usage: Usage | None = None):
        self.backend = backend
        self.usage = usage if usage is not None else Usage()  # exact counts, recorded as responses arrive
        self.model = model
        self.top_logprobs = top_logprobs
        self.request_id = request_id
        self.param = param  # what a context-length error names: "messages" or "prompt"
        self._inputs = triton_inputs(prompt, params, stream=stream, logprobs=top_logprobs is not None,
                                     images=images)
        self._responses: AsyncIterator[Tensors] | None = None
        self._first: Step | None = None

    async def start(self) -> None:
        self._responses = self.backend.stream(self.model, self._inputs, OUTPUTS, request_id=self.request_id)
        try:
            self._first = self._record(parse_step(await anext(self._responses), self.top_logprobs))
            self.usage.add_prompt(self._first.prompt_tokens)
        except StopAsyncIteration:
            await self.aclose()
            raise APIError("the model ended the request without a response") from None
        except APIError as exc:
            await self.aclose()
            if exc.code == CONTEXT_LENGTH_EXCEEDED:  # the engine knows the prompt, the frontend its field
                exc.param = self.param
            raise
        except BaseException:
            await self.aclose()
            raise

    async def steps(self) -> AsyncIterator[Step]:
        if self._responses is None:
            await self.start()
        try:
            yield self._first
            async for outputs in self._responses:
                yield self._record(parse_step(outputs, self.top_logprobs))
        finally:
            await self.aclose()

    def _record(self, step: Step) -> Step:
        self.usage.add_completion(sum(step.counts))
        return step

    async def collect(self) -> list[Step]:
        return [step async for step in self.steps()]

    async def aclose(self) -> None:
        if self._responses is not None:
            await self._responses.aclose()


async def start_all(generations: list[Generation]) -> None:
    """Start every generation; the first failure cancels the others (and closes their Triton streams)."""
    try:
        async with asyncio.TaskGroup() as group:
            for generation in generations:
                group.create_task(generation.start())
    except BaseExceptionGroup as failed:
        await asyncio.gather(*(g.aclose() for g in generations), return_exceptions=True)
        raise _first(failed) from None


async def collect_all(generations: list[Generation]) -> list[list[Step]]:
    """Every generation's steps; the first failure cancels the others, so none runs on unread and unpaid."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(generation.collect()) for generation in generations]
    except BaseExceptionGroup as failed:
        raise _first(failed) from None
    return [task.result() for task in tasks]


def _first(group: BaseExceptionGroup) -> BaseException:
    """The error that failed a task group (the others are the cancellations it caused)."""
    errors = [e for e in group.exceptions if not isinstance(e, asyncio.CancelledError)]
    first = errors[0] if errors else group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


async def merged(generations: list[Generation]) -> AsyncIterator[tuple[int, Step]]:
    """(generation index, step) from every generation as they arrive; the first error ends them all."""
    if len(generations) == 1:
        async for step in generations[0].steps():
            yield 0, step
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, generation: Generation) -> None:
        try:
            async for step in generation.steps():
                await queue.put((index, step, None))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            await queue.put((index, None, exc))
        else:
            await queue.put((index, None, None))

    tasks = [asyncio.create_task(pump(i, g)) for i, g in enumerate(generations)]
    try:
        running = len(tasks)
        while running:
            index, step, error = await queue.get()
            if error is not None:
                raise error
            if step is None:
                running -= 1
            else:
                yield index, step
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class Choice:
    """A choice being assembled from steps (non-streaming), or counted (streaming)."""

    text: str = ""
    tokens: int = 0
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class Tally:
    """Exact usage: prompt tokens once per prompt (as Triton counted them), completion tokens per choice."""

    prompt_tokens: dict[int, int] = field(default_factory=dict)
    completion_tokens: int = 0

    def add(self, prompt_index: int, step: Step) -> None:
        self.prompt_tokens[prompt_index] = step.prompt_tokens
        self.completion_tokens += sum(step.counts)

    def usage(self) -> dict:
        prompt = sum(self.prompt_tokens.values())
        return {"prompt_tokens": prompt, "completion_tokens": self.completion_tokens,
                "total_tokens": prompt + self.completion_tokens}


def assemble(steps: list[Step], n: int) -> list[Choice]:
    choices = [Choice() for _ in range(n)]
    for step in steps:
        for i, choice in enumerate(choices):
            choice.text += step.texts[i]
            choice.tokens += step.counts[i]
            if step.logprobs is not None:
                choice.logprobs.extend(step.logprobs[i])
            if step.finish_reasons is not None:
                choice.finish_reason = step.finish_reasons[i]
    return choices


def response_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())
