"""/tokenize and /detokenize: the model's own tokenizer, in Triton (the frontend loads no model files).

A chat model answers through its own entry point, with the engine's tokenizer, so the ids are those its
engine sees for that prompt; an embeddings model through its ensemble's tokenizer step. Chat messages are
rendered by the same function as /v1/chat/completions (services/chat.py `chat_prompt`).
"""

from __future__ import annotations

import numpy as np

from frontend.context import RequestContext
from frontend.errors import ContextLengthExceeded, InvalidRequest
from frontend.protocol.tokenize import DetokenizeRequest, TokenizeRequest
from frontend.registry import ModelRegistry, ServedModel
from frontend.services.chat import chat_prompt
from frontend.services.generation import TASKS_CHAT
from frontend.services.models import context_length
from frontend.triton import Backend, Tensors
from triton_models import contract

TASKS = (*TASKS_CHAT, "embeddings")
TEXT_INPUT = "text_input"


class TokenizeService:
    def __init__(self, backend: Backend, registry: ModelRegistry):
        self.backend = backend
        self.registry = registry

    async def tokenize(self, request: TokenizeRequest, ctx: RequestContext) -> dict:
        model = await self.registry.get(request.model, *TASKS)
        if request.messages is not None:
            if model.task not in TASKS_CHAT:
                raise InvalidRequest(f"`{model.name}` serves {model.task}, which takes no messages; send `prompt`",
                                     param="messages", code="model_task_mismatch")
            tools = [t.model_dump(exclude_none=True) for t in request.tools] if request.tools else None
            text, _ = chat_prompt(model, request.messages, tools, request.add_generation_prompt)
        else:
            text = request.prompt
        inputs = {TEXT_INPUT: _strings([text]), contract.TOKENIZE: np.array([True])}
        if request.add_special_tokens is not None:
            inputs[contract.ADD_SPECIAL_TOKENS] = np.array([request.add_special_tokens])
        outputs = [contract.TOKEN_IDS, *([contract.TOKEN_STRS] if request.return_token_strs else [])]
        answer = await self._call(model, inputs, outputs, ctx.request_id)
        tokens = answer[contract.TOKEN_IDS].reshape(-1).tolist()
        limit = context_length(model)
        if limit is not None and len(tokens) > limit:  # as vLLM: what the model cannot take is no answer
            what = "prompt" if request.prompt is not None else "messages"
            raise ContextLengthExceeded(f"This model's maximum context length is {limit} tokens, but the {what} "
                                        f"has {len(tokens)} tokens", param=what)
        result = {"count": len(tokens), "max_model_len": limit, "tokens": tokens}
        if request.return_token_strs:
            result["token_strs"] = [s.decode("utf-8") for s in answer[contract.TOKEN_STRS].reshape(-1)]
        return result

    async def detokenize(self, request: DetokenizeRequest, ctx: RequestContext) -> dict:
        model = await self.registry.get(request.model, *TASKS)
        limit = context_length(model)
        if limit is not None and len(request.tokens) > limit:
            raise ContextLengthExceeded(f"This model's maximum context length is {limit} tokens, but tokens holds "
                                        f"{len(request.tokens)}", param="tokens")
        if not request.tokens:
            return {"prompt": ""}
        inputs = {TEXT_INPUT: _strings([""]), contract.DETOKENIZE: np.array(request.tokens, dtype=np.int64)}
        answer = await self._call(model, inputs, [contract.DETOKENIZED], ctx.request_id)
        return {"prompt": answer[contract.DETOKENIZED].reshape(-1)[0].decode("utf-8")}

    async def _call(self, model: ServedModel, inputs: Tensors, outputs: list[str], request_id: str) -> Tensors:
        """One entry-point request: to a chat model itself (decoupled: one response on its stream), or to an
        embeddings model's tokenizer step."""
        if model.task in TASKS_CHAT:
            answer: Tensors = {}
            async for response in self.backend.stream(model.name, inputs, outputs, request_id=request_id):
                answer.update(response)
            return answer
        tokenizer = model.parameters.get(contract.TOKENIZER_MODEL)
        if not tokenizer:  # exported before the parameter existed: `make export` writes it
            raise InvalidRequest(f"`{model.name}` names no {contract.TOKENIZER_MODEL} in its config; re-export it to "
                                 "tokenize with it", param="model", code="unsupported_model")
        return await self.backend.infer(tokenizer, inputs, outputs, request_id=request_id)


def _strings(texts: list[str]) -> np.ndarray:
    return np.array([t.encode("utf-8") for t in texts], dtype=np.object_)
