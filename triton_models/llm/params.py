"""Sampling parameters: the JSON in the `sampling_parameters` input, keys as vLLM's SamplingParams."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

# CACHE_SALT (vLLM's name) scopes prefix-cache reuse: requests share cached prompt KV only when their salts
# are equal; without one a request uses the unsalted pool.
from triton_models.contract import (
    CACHE_SALT,
    INVALID_REQUEST,
    LOGIT_BIAS,
    MAX_LOGIT_BIAS,
    MAX_CACHE_SALT_CHARS,
    MAX_LOGPROBS,
    MAX_N,
    MAX_STOP_SEQUENCES,
    STRUCTURED_KINDS,
    STRUCTURED_OUTPUTS,
    STRUCTURED_PARAM,
    UNSUPPORTED_PARAMETER,
    ModelError,
)

# Below this, temperature sampling is greedy (vLLM's _SAMPLING_EPS): dividing logits by it overflows float32.
GREEDY_TEMPERATURE = 1e-5


class InvalidRequest(ModelError, ValueError):
    """The request cannot be served as asked: a ModelError (INVALID_REQUEST unless told) whose `param` is the
    sampling field as the OpenAI request names it; the model sends it as is (INVALID_ARG)."""

    def __init__(self, message: str, param: str | None = None, code: str = INVALID_REQUEST):
        super().__init__(code, message, param)


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling settings; a temperature below GREEDY_TEMPERATURE (0 included) means greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: no top-k
    seed: int | None = None
    stop: tuple[str, ...] = ()
    max_tokens: int | None = None  # None: up to the context length
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None  # None: no logprobs; k: the sampled token's plus the top k
    ignore_eos: bool = False
    n: int = 1
    stop_token_ids: tuple[int, ...] = field(default=())
    cache_salt: str | None = None  # CACHE_SALT: the prefix-cache scope (None: the shared, unsalted pool)
    # STRUCTURED_OUTPUTS: (kind, value, param), kind one of STRUCTURED_KINDS; compiled by triton_models.llm.grammar
    structured: tuple[str, object, str | None] | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()  # LOGIT_BIAS: (token id, bias) added to the logits

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_TEMPERATURE or self.top_k == 1

    @classmethod
    def from_json(cls, text: str | bytes | None) -> SamplingParams:
        if not text:
            return cls()
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidRequest(f"sampling_parameters is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidRequest("sampling_parameters must be a JSON object")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict) -> SamplingParams:
        unknown = sorted(set(data) - _PARSERS.keys())
        if unknown:
            raise InvalidRequest(f"unsupported sampling parameter {unknown[0]!r}", unknown[0], UNSUPPORTED_PARAMETER)
        values = {}
        for key, value in data.items():
            if value is None:
                continue  # JSON null: the default, as vLLM treats it
            try:
                values["structured" if key == STRUCTURED_OUTPUTS else key] = _PARSERS[key](value)
            except (TypeError, ValueError) as exc:
                raise InvalidRequest(f"sampling parameter {key!r}: {exc}", key) from exc
        return cls(**values)


def _number(low: float, high: float):
    def parse(value) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"{value} is outside [{low}, {high}]")
        return float(value)
    return parse


def _integer(low: int, high: int | None = None):
    def parse(value) -> int:
        whole_float = isinstance(value, float) and value.is_integer()
        if isinstance(value, bool) or not isinstance(value, int) and not whole_float:
            raise TypeError(f"expected an integer, got {value!r}")
        value = int(value)
        if value < low or high is not None and value > high:
            raise ValueError(f"{value} is outside [{low}, {high if high is not None else 'inf'}]")
        return value
    return parse


def _top_p(value) -> float:
    value = _number(0.0, 1.0)(value)
    if value == 0.0:
        raise ValueError("must be > 0")
    return value


def _top_k(value) -> int:
    value = _integer(-1)(value)
    return 0 if value == -1 else value


def _seed(value) -> int:
    return _integer(-(2**63), 2**64 - 1)(value) % 2**64


def _stop(value) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise TypeError("expected a string or a list of strings")
    if len(items) > MAX_STOP_SEQUENCES:
        raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences, got {len(items)}")
    return tuple(s for s in items if s)


def _token_ids(value) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise TypeError("expected a list of token ids")
    return tuple(_integer(0)(v) for v in value)


def _cache_salt(value) -> str:
    # Non-empty, as vLLM requires: an empty salt would silently mean "shared" to one reader and not another.
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    if not 0 < len(value) <= MAX_CACHE_SALT_CHARS:
        raise ValueError(f"must be a non-empty string of at most {MAX_CACHE_SALT_CHARS} characters")
    return value


def _bool(value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _structured(value) -> tuple[str, object, str | None]:
    """`structured_outputs` -> (kind, value, param): exactly one of STRUCTURED_KINDS, and the request field it
    came from if given (STRUCTURED_PARAM)."""
    if not isinstance(value, dict):
        raise TypeError("expected an object")
    value = dict(value)
    param = value.pop(STRUCTURED_PARAM, None)
    if param is not None and not isinstance(param, str):
        raise TypeError(f"{STRUCTURED_PARAM} must be a string")
    given = [k for k, v in value.items() if v is not None and v is not False]
    unknown = sorted(set(value) - set(STRUCTURED_KINDS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (one of {', '.join(STRUCTURED_KINDS)})")
    if len(given) != 1:
        raise ValueError(f"give exactly one of {', '.join(STRUCTURED_KINDS)}")
    kind = given[0]
    item = value[kind]
    expected = {"json": (dict, str), "json_object": (bool,), "regex": (str,), "choice": (list,), "grammar": (str,)}
    if not isinstance(item, expected[kind]):
        raise TypeError(f"{STRUCTURED_OUTPUTS}.{kind} has the wrong type")
    if kind == "choice" and not (item and all(isinstance(c, str) for c in item)):
        raise ValueError("choice must be a non-empty list of strings")
    return kind, (json.loads(item) if kind == "json" and isinstance(item, str) else item), param


def _logit_bias(value) -> tuple[tuple[int, float], ...]:
    if not isinstance(value, dict):
        raise TypeError("expected an object of token id -> bias")
    if len(value) > MAX_LOGIT_BIAS:
        raise ValueError(f"at most {MAX_LOGIT_BIAS} entries, got {len(value)}")
    pairs = []
    for key, bias in value.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"{key!r} is not a token id") from None
        pairs.append((_integer(0)(token), _number(-100.0, 100.0)(bias)))
    return tuple(sorted(pairs))


_PARSERS = {
    "temperature": _number(0.0, 100.0),
    "top_p": _top_p,
    "top_k": _top_k,
    "seed": _seed,
    "stop": _stop,
    "max_tokens": _integer(1),
    "presence_penalty": _number(-2.0, 2.0),
    "frequency_penalty": _number(-2.0, 2.0),
    "logprobs": _integer(0, MAX_LOGPROBS),
    "ignore_eos": _bool,
    "n": _integer(1, MAX_N),
    "stop_token_ids": _token_ids,
    CACHE_SALT: _cache_salt,
    STRUCTURED_OUTPUTS: _structured,
    LOGIT_BIAS: _logit_bias,
}
