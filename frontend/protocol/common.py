"""Base classes shared by every endpoint's protocol.

Requests are strict, as OpenAI's API is: a JSON string is never coerced to a boolean or a number
(`"stream": "yes"` and `"n": "1"` are refused); integers are accepted where numbers are (`temperature: 1`).
Every string in a request is checked for unpaired UTF-16 surrogates (`"\\ud800"` is valid JSON but not
text): one would fail later, when encoded for Triton or for the response.
"""

from __future__ import annotations

import logging
import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

log = logging.getLogger(__name__)

_SURROGATE = re.compile("[\ud800-\udfff]")


class FieldError(ValueError):
    """A request field is wrong, in a way the field's own type cannot say; `field` becomes the error's param."""

    code: str | None = None

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field


class UnsupportedField(FieldError):
    """An OpenAI parameter this server does not implement (yet)."""

    code = "unsupported_parameter"

    def __init__(self, field: str):
        super().__init__(field, f"`{field}` is not supported by this server")


MAX_DEPTH = 64  # nesting a request body may have: OpenAI's deepest (tool schemas) are far shallower


class TooDeep(Exception):
    def __init__(self, path: str):
        super().__init__(path)
        self.path = path


def surrogate_path(value: Any, path: str = "") -> str | None:
    """The dotted path (`messages.0.content`) of the first string in `value` (dict keys included) holding an
    unpaired surrogate; "" for the top level; None when every string is valid Unicode. Iterative, so a deeply
    nested body cannot exhaust the stack; TooDeep past MAX_DEPTH levels."""
    stack = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                return where
            continue
        if depth >= MAX_DEPTH and isinstance(item, (dict, list)):
            raise TooDeep(where)
        if isinstance(item, dict):
            children = []
            for key, child in item.items():
                if isinstance(key, str) and not key.isascii() and _SURROGATE.search(key):
                    children.append((key, where, depth + 1))  # the key itself is not text: name where it is
                    break
                children.append((child, f"{where}.{key}" if where else str(key), depth + 1))
            stack.extend(reversed(children))  # depth first, in document order
        elif isinstance(item, list):
            stack.extend(reversed([(child, f"{where}.{i}" if where else str(i), depth + 1)
                                   for i, child in enumerate(item)]))
    return None


def unicode_problem(data: Any) -> FieldError | None:
    """The error for a request whose strings hold an unpaired surrogate (named by path), or that is nested
    too deeply to be a real request; None when it is fine."""
    try:
        path = surrogate_path(data)
    except TooDeep as deep:
        return FieldError(deep.path or None, f"{deep.path or 'the request'}: nested more than {MAX_DEPTH} levels "
                                             "deep")
    if path is None:
        return None
    return FieldError(path or None, f"{path or 'the request'}: contains an unpaired surrogate (\\ud800-\\udfff), "
                                    "which is not valid Unicode text")


class Strict(BaseModel):
    """Plain request data: no type coercion."""

    model_config = ConfigDict(strict=True)


class StrictRequest(Strict):
    """A request body: strict, with every string checked for unpaired surrogates before anything else."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data):
        problem = unicode_problem(data)
        if problem is not None:
            raise problem
        return data


class OpenAIRequest(StrictRequest):
    """Unknown fields are accepted (clients send newer OpenAI fields) and logged by name, like vLLM."""

    model_config = ConfigDict(extra="allow")

    # Fields OpenAI defines that this endpoint does not support yet: refused by name, never dropped.
    unsupported_fields: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _log_unknown(self):
        if self.model_extra:
            unsupported = sorted(set(self.model_extra) & set(type(self).unsupported_fields))
            if unsupported:
                raise UnsupportedField(unsupported[0])
            log.warning("%s: ignoring unknown fields %s", type(self).__name__, sorted(self.model_extra))
        return self


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int | None = None


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope: every non-2xx answer of this server has this body."""

    error: ErrorDetail
