"""Embeddings: text goes to the model's ensemble (tokenised in Triton), token ids straight to its encoder."""

from __future__ import annotations

import asyncio
import base64
import functools

import numpy as np

from frontend.context import RequestContext
from frontend.errors import ContextLengthExceeded, InvalidRequest
from frontend.protocol.embeddings import EmbeddingRequest
from frontend.registry import ModelRegistry, ServedModel
from frontend.triton import Backend
from triton_models.contract import INVALID_TOKEN_IDS

TASK = "embeddings"
# Tensor names of the embedding ensemble and of its encoder (checked by tests/contract).
TEXT_INPUT, EMBEDDING, NUM_TOKENS = "text_input", "embedding", "num_input_tokens"
TOKEN_INPUTS = ("input_ids", "attention_mask")
TRUNCATE_INPUT = "truncate_prompt_tokens"  # optional ensemble input: keep the last k tokens of each text
INT64_LIMIT = 2**63  # no id reaches it; bounds ids when a model does not publish its `vocab_size`
LANGCHAIN_HINT = ("LangChain's OpenAIEmbeddings sends tiktoken token ids by default: create it with "
                  "check_embedding_ctx_length=False to send text")


class EmbeddingService:
    def __init__(self, backend: Backend, registry: ModelRegistry, max_inputs: int):
        self.backend = backend
        self.registry = registry
        self.max_inputs = max_inputs

    async def create(self, request: EmbeddingRequest, ctx: RequestContext) -> dict:
        request_id = ctx.request_id
        model = await self.registry.get(request.model, TASK)
        dim = model.int_param("embedding_dim")
        if request.dimensions is not None and dim is not None and request.dimensions > dim:
            raise InvalidRequest(f"dimensions must be at most {dim} for `{model.name}`, got {request.dimensions}",
                                 param="dimensions")
        inputs = request.input
        if isinstance(inputs[0], int):  # one token list
            inputs = [inputs]
        if len(inputs) > self.max_inputs:
            raise InvalidRequest(f"at most {self.max_inputs} inputs per request, got {len(inputs)}", param="input")
        keep = truncation(model, request.truncate_prompt_tokens, texts=isinstance(inputs[0], str))
        try:
            vectors, prompt_tokens = await self.embed(model, inputs, request_id, keep)
        except ContextLengthExceeded as exc:
            if request.truncate_prompt_tokens is None:  # say how to get an answer anyway
                exc.message += f"; set {TRUNCATE_INPUT} (-1: the context length) to keep each input's last tokens"
            raise
        ctx.usage.add_prompt(prompt_tokens)
        if request.dimensions is not None and request.dimensions != vectors.shape[1]:
            vectors = _truncate(vectors, request.dimensions)
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": _encode(v, request.encoding_format)}
                     for i, v in enumerate(vectors)],
            "model": model.name,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }

    async def embed(self, model: ServedModel, inputs: list, request_id: str,
                    keep: int | None = None) -> tuple[np.ndarray, int]:
        """The vectors of `inputs` (texts, or token id lists) and their tokens in all: calls of the model's
        `max_inputs_per_request` inputs each, all at once (its encoder batches them); `keep` as `truncation`."""
        if isinstance(inputs[0], str):
            embed = functools.partial(self._embed_texts, keep=keep)
        else:
            inputs = _checked_tokens(model, inputs, keep)
            embed = self._embed_tokens
        chunk = model.int_param("max_inputs_per_request", 64)
        results = await asyncio.gather(*(embed(model, inputs[i:i + chunk], request_id)
                                         for i in range(0, len(inputs), chunk)))
        return np.concatenate([r[0] for r in results]), int(sum(int(r[1].sum()) for r in results))

    async def _embed_texts(self, model: ServedModel, texts: list[str], request_id: str, keep: int | None = None):
        inputs = {TEXT_INPUT: np.array([t.encode() for t in texts], dtype=np.object_)}
        if keep is not None:
            inputs[TRUNCATE_INPUT] = np.array([keep], dtype=np.int32)
        outputs = await self.backend.infer(model.name, inputs, [EMBEDDING, NUM_TOKENS], request_id=request_id)
        return outputs[EMBEDDING], outputs[NUM_TOKENS]

    async def _embed_tokens(self, model: ServedModel, token_lists: list[list[int]], request_id: str):
        limit = model.int_param("max_input_tokens")
        lengths = np.array([len(t) for t in token_lists], dtype=np.int64)
        for i, length in enumerate(lengths):
            if limit is not None and length > limit:
                raise ContextLengthExceeded(
                    f"This model's maximum context length is {limit} tokens, but input {i} has {length} tokens",
                    param="input")
        input_ids = np.zeros((len(token_lists), int(lengths.max())), dtype=np.int64)
        mask = np.zeros_like(input_ids)
        for row, tokens in enumerate(token_lists):
            input_ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        encoder = model.parameters.get("token_input_model")
        if not encoder:
            raise InvalidRequest(f"`{model.name}` does not accept token ids as input", param="input")
        outputs = await self.backend.infer(encoder, dict(zip(TOKEN_INPUTS, (input_ids, mask))),
                                           [EMBEDDING], request_id=request_id)
        return outputs[EMBEDDING], lengths


def truncation(model: ServedModel, requested: int | None, texts: bool) -> int | None:
    """How many tokens each input keeps (vLLM's `truncate_prompt_tokens`; -1: the context length), or None."""
    if requested is None:
        return None
    limit = model.int_param("max_input_tokens")
    keep = limit if requested == -1 else requested
    if keep is None:
        raise InvalidRequest(f"`{model.name}` publishes no context length; give {TRUNCATE_INPUT} as a number "
                             "of tokens", param=TRUNCATE_INPUT)
    if limit is not None and keep > limit:
        raise InvalidRequest(f"{TRUNCATE_INPUT} ({keep}) is greater than the context length of `{model.name}` "
                             f"({limit} tokens); choose a smaller value or -1", param=TRUNCATE_INPUT)
    if texts and model.parameters.get("truncation_side") != "left":  # its tokenizer model cuts texts
        raise InvalidRequest(f"`{model.name}` cannot truncate text inputs; send shorter texts",
                             param=TRUNCATE_INPUT, code="unsupported_parameter")
    return keep


def _checked_tokens(model: ServedModel, token_lists: list[list[int]], keep: int | None) -> list[list[int]]:
    """Token ids within the model's vocabulary (an id outside it fails inside the encoder, or worse, an id
    from another tokenizer gives a wrong vector), each list cut to its last `keep` ids as vLLM does."""
    vocab = model.int_param("vocab_size") or INT64_LIMIT
    for index, tokens in enumerate(token_lists):
        bad = next((t for t in tokens if t >= vocab), None)
        if bad is not None:
            size = f"`{model.name}` has {vocab} tokens (ids 0 to {vocab - 1})" if vocab < INT64_LIMIT else \
                "it is not a token id"
            raise InvalidRequest(f"input {index} holds token id {bad}, but {size}. Token ids must come from this "
                                 f"model's own tokenizer; send text otherwise. {LANGCHAIN_HINT}.",
                                 param="input", code=INVALID_TOKEN_IDS)
    return token_lists if keep is None else [tokens[-keep:] for tokens in token_lists]


def _truncate(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """OpenAI's `dimensions`: keep the first components and re-normalise to unit length."""
    cut = vectors[:, :dimensions]
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    return np.ascontiguousarray(cut / np.maximum(norms, 1e-12), dtype=np.float32)


def _encode(vector: np.ndarray, encoding_format: str):
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector
