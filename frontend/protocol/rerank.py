"""POST /v1/rerank (Cohere's, Jina's and vLLM's shape) and POST /v1/score (vLLM's): text pairs scored by a model.

Both score (first text, second text) pairs: rerank pairs its `query` with each of `documents` and sorts the
results; score pairs `text_1` with `text_2` one to one, one to many or many to many, in order.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from frontend.protocol.common import FieldError, Strict, Usage
from frontend.protocol.embeddings import PromptTruncation


class TextDocument(Strict):
    """A document as an object (Jina's and vLLM's other form); only text is scored."""

    model_config = ConfigDict(extra="forbid")

    text: str


class RerankRequest(PromptTruncation):
    # Cohere's knobs this server does not implement: refused by name, never dropped.
    unsupported_fields = ("max_tokens_per_doc", "rank_fields", "max_chunks_per_doc", "relevant_spans")

    model: str
    query: str
    documents: list[str | TextDocument]
    top_n: int | None = Field(None, ge=1)  # None: every document; more than there are: every document
    return_documents: bool = True  # vLLM and Jina return them; Cohere's v1 API could leave them out

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query must not be empty")
        return value

    @field_validator("documents")
    @classmethod
    def _documents(cls, value: list) -> list:
        if not value:
            raise ValueError("documents must not be empty")
        return value

    @property
    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class ScoreRequest(PromptTruncation):
    model: str
    text_1: str | list[str]
    text_2: str | list[str]

    @model_validator(mode="after")
    def _pairing(self):
        for field in ("text_1", "text_2"):
            if getattr(self, field) == []:
                raise FieldError(field, f"{field} must not be an empty list")
        if len(self.firsts) not in (1, len(self.seconds)):
            raise FieldError("text_2", f"text_1 has {len(self.firsts)} texts and text_2 {len(self.seconds)}: give "
                                       "text_1 one text (scored against each of text_2) or as many as text_2")
        return self

    @property
    def firsts(self) -> list[str]:
        return [self.text_1] if isinstance(self.text_1, str) else self.text_1

    @property
    def seconds(self) -> list[str]:
        return [self.text_2] if isinstance(self.text_2, str) else self.text_2

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """(index in text_1, index in text_2) of each score, in order: 1:1, 1:N (the one text_1 against each of
        text_2) or N:N (element by element)."""
        return [(0 if len(self.firsts) == 1 else i, i) for i in range(len(self.seconds))]


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int  # in `documents`
    relevance_score: float
    document: RerankDocument | None = None  # with return_documents


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]  # most relevant first
    usage: Usage


class Score(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[Score]
    usage: Usage
