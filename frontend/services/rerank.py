"""Rerank and score: (first, second) text pairs scored by a cross-encoder, or by any embeddings model.

How a model scores comes from its task (triton_models.contract.SCORING): a cross-encoder's ensemble reads each
pair (tokenised together in Triton, cut to its context) and returns sigmoid(logit); an embeddings model embeds
each text once, batched as /v1/embeddings batches, and a pair scores the cosine similarity of its two vectors.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import numpy as np

from frontend.context import RequestContext
from frontend.errors import ContextLengthExceeded, InvalidRequest
from frontend.protocol.rerank import RerankRequest, ScoreRequest
from frontend.registry import ModelRegistry, ServedModel
from frontend.services.embeddings import TRUNCATE_INPUT, EmbeddingService, truncation
from frontend.triton import Backend
from triton_models.contract import CROSS_ENCODER, SCORING, UNSUPPORTED_PARAMETER

# Tensor names of a cross-encoder's ensemble (export_scripts/rerank.py; checked by tests/contract).
TEXT_INPUT, PAIR_INPUT, SCORE, NUM_TOKENS = "text_input", "text_pair", "score", "num_input_tokens"

Pairs = list[tuple[int, int]]  # (index of the first text, index of the second) per score


class RerankService:
    def __init__(self, backend: Backend, registry: ModelRegistry, embeddings: EmbeddingService, max_documents: int):
        self.backend = backend
        self.registry = registry
        self.embeddings = embeddings
        self.max_documents = max_documents

    async def rerank(self, request: RerankRequest, ctx: RequestContext) -> dict:
        model = await self._model(request.model, len(request.documents), "documents")
        texts = request.texts
        scores, tokens = await self._score(model, [request.query], texts, [(0, i) for i in range(len(texts))],
                                           request.truncate_prompt_tokens, ("query", "documents"), ctx)
        results = [{"index": i, "relevance_score": float(scores[i]),
                    **({"document": {"text": texts[i]}} if request.return_documents else {})}
                   for i in ranked(scores, request.top_n)]
        return {"id": f"rerank-{uuid.uuid4().hex}", "model": model.name, "results": results,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    async def score(self, request: ScoreRequest, ctx: RequestContext) -> dict:
        model = await self._model(request.model, len(request.seconds), "text_2")
        scores, tokens = await self._score(model, request.firsts, request.seconds, request.pairs,
                                           request.truncate_prompt_tokens, ("text_1", "text_2"), ctx)
        return {"id": f"score-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                "model": model.name,
                "data": [{"index": i, "object": "score", "score": float(s)} for i, s in enumerate(scores)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    async def _model(self, name: str, documents: int, field: str) -> ServedModel:
        model = await self.registry.get(name, *SCORING)
        if documents > self.max_documents:
            raise InvalidRequest(f"at most {self.max_documents} {field} per request, got {documents}", param=field)
        return model

    async def _score(self, model: ServedModel, firsts: list[str], seconds: list[str], pairs: Pairs,
                     truncate: int | None, fields: tuple[str, str], ctx: RequestContext) -> tuple[np.ndarray, int]:
        """One score per pair and the tokens read, recorded as the request's usage."""
        if SCORING[model.task] == CROSS_ENCODER:
            if truncate is not None:
                raise InvalidRequest(f"`{model.name}` is a cross-encoder: it cuts each pair to its context "
                                     f"({model.int_param('max_input_tokens')} tokens) itself; {TRUNCATE_INPUT} "
                                     "is for embeddings models", param=TRUNCATE_INPUT, code=UNSUPPORTED_PARAMETER)
            scores, tokens = await self._cross_encode(model, [firsts[i] for i, _ in pairs],
                                                      [seconds[j] for _, j in pairs], ctx.request_id)
        else:
            scores, tokens = await self._cosines(model, firsts, seconds, pairs, truncate, fields, ctx.request_id)
        ctx.usage.add_prompt(tokens)
        return scores, tokens

    async def _cross_encode(self, model: ServedModel, firsts: list[str], seconds: list[str],
                            request_id: str) -> tuple[np.ndarray, int]:
        chunk = model.int_param("max_inputs_per_request", 64)

        async def call(start: int):
            end = start + chunk
            inputs = {TEXT_INPUT: _strings(firsts[start:end]), PAIR_INPUT: _strings(seconds[start:end])}
            return await self.backend.infer(model.name, inputs, [SCORE, NUM_TOKENS], request_id=request_id)

        results = await asyncio.gather(*(call(start) for start in range(0, len(firsts), chunk)))
        scores = np.concatenate([r[SCORE].reshape(-1) for r in results])
        return scores, int(sum(int(r[NUM_TOKENS].sum()) for r in results))

    async def _cosines(self, model: ServedModel, firsts: list[str], seconds: list[str], pairs: Pairs,
                       truncate: int | None, fields: tuple[str, str], request_id: str) -> tuple[np.ndarray, int]:
        keep = truncation(model, truncate, texts=True)
        # Each side in its own calls, so an over-long text is reported against its own field.
        embedded = await asyncio.gather(*(self.embeddings.embed(model, texts, request_id, keep)
                                          for texts in (firsts, seconds)), return_exceptions=True)
        for field, result in zip(fields, embedded):
            if isinstance(result, ContextLengthExceeded):
                raise ContextLengthExceeded(
                    f"{field} holds a text longer than the context of `{model.name}` "
                    f"({model.int_param('max_input_tokens')} tokens); set {TRUNCATE_INPUT} (-1: the context length) "
                    "to keep each text's last tokens", param=field)
            if isinstance(result, BaseException):
                raise result
        (a, a_tokens), (b, b_tokens) = embedded
        first, second = (list(side) for side in zip(*pairs))
        return cosine(a[first], b[second]), a_tokens + b_tokens


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity, in float64 (models that do not normalise their vectors score the same)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def ranked(scores: np.ndarray, top_n: int | None = None) -> list[int]:
    """Indices by score, highest first, ties in input order; the first `top_n` (None: all)."""
    return np.argsort(-np.asarray(scores), kind="stable")[:top_n].tolist()


def _strings(texts: list[str]) -> np.ndarray:
    return np.array([t.encode() for t in texts], dtype=np.object_)
