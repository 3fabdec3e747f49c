"""Constrained decoding with llguidance: a JSON schema, any JSON object, a regex, a choice or a Lark grammar
turned into a token mask per step, so the output always parses (and validates against the schema).

One `Grammars` per model holds llguidance's view of the tokenizer (built once from tokenizer.json); a request's
constraint is compiled and checked when it is submitted (a schema keyword the grammar cannot enforce is a 400
naming it, never dropped), and each of its sequences gets its own `Constraint` (a matcher) that masks the
logits row before sampling and follows the sampled tokens. A mask costs ~20-30 µs per token (p99 ~0.5 ms
inside length-bounded strings) on this machine; applying it to a 49,152-wide row ~25 µs.
"""

from __future__ import annotations

import functools
import json

import numpy as np

from triton_models.contract import JSON_WHITESPACE, closed_objects
from triton_models.llm.params import InvalidRequest

JSON_OPTIONS = {"whitespace_pattern": JSON_WHITESPACE}
COMPILED_CACHE = 256  # compiled grammars kept per model
PARAM = "response_format"  # the OpenAI field a constraint comes from (guided_* extensions say theirs)


class Grammars:
    """Compiles constraints for one tokenizer; `llguidance` is imported only when a request asks for one."""

    def __init__(self, text_tokenizer, cached: int = COMPILED_CACHE):
        self._text_tokenizer = text_tokenizer  # a TextTokenizer: its tokenizers.Tokenizer and end-of-sequence ids
        self._tokenizer = None
        # Agents send the same schemas and tools again and again: compiled grammars are kept by their text.
        self._compiled = functools.lru_cache(maxsize=cached)(self._compile)

    @property
    def tokenizer(self):
        """llguidance's tokenizer, built on first use (~0.3 s)."""
        if self._tokenizer is None:
            import llguidance

            source = self._text_tokenizer
            # without eos_token llguidance takes id 0, which is not every model's end of sequence
            self._tokenizer = llguidance.LLTokenizer(source.tokenizer.to_str(),
                                                     eos_token=sorted(source.eos_ids) or None)
        return self._tokenizer

    def compile(self, kind: str, value, param: str | None = None) -> str:
        """The grammar for one `structured_outputs` entry, checked against the tokenizer; InvalidRequest (naming
        `param`, by default the field the kind comes from) if the constraint cannot be enforced as given.
        Cached by the constraint's JSON text, key order kept (a schema's property order is the answer's key
        order); refusals are not cached."""
        return self._compiled(kind, json.dumps(value), param)

    def _compile(self, kind: str, text: str, param: str | None) -> str:
        import llguidance

        from llguidance import LLMatcher

        value = json.loads(text)
        param = field(kind, param)
        if kind == "json":
            grammar = LLMatcher.grammar_from_json_schema(closed_objects(value), defaults=JSON_OPTIONS)
        elif kind == "json_object":
            grammar = LLMatcher.grammar_from_json_schema({"type": "object"}, defaults=JSON_OPTIONS)
        elif kind == "regex":
            grammar = LLMatcher.grammar_from_regex(value)
        elif kind == "choice":
            grammar = llguidance.grammar_from("choice", json.dumps(value))
        else:
            grammar = LLMatcher.grammar_from_lark(value)
        failed, messages = LLMatcher.validate_grammar_with_warnings(grammar, self.tokenizer, limits=_limits())
        if failed:
            raise InvalidRequest(f"the {_describe(kind)} cannot be enforced: {_first_line(messages)}", param)
        return grammar

    def constraint(self, grammar: str, param: str | None = None) -> Constraint:
        """A matcher of `grammar` for one sequence; `param`: the request field it came from (its errors')."""
        from llguidance import LLMatcher

        return Constraint(LLMatcher(self.tokenizer, grammar, log_level=0, limits=_limits()),
                          self.tokenizer.vocab_size, param)


def field(kind: str, param: str | None = None) -> str:
    """The request field a constraint of `kind` came from: `param` when the caller said, else the field of the
    kind (response_format for JSON, guided_<kind> for the others)."""
    return param or (PARAM if kind in ("json", "json_object") else f"guided_{kind}")


class Unfollowable(ValueError):
    """The grammar refused a token its own mask allowed: it cannot be followed with this tokenizer's tokens
    (seen with a regex of astral characters, whose byte tokens llguidance masks and then refuses)."""

    def __init__(self, message: str, param: str | None):
        super().__init__(message)
        self.param = param


class Constraint:
    """One sequence's position in its grammar: which tokens may come next, and whether it is complete."""

    def __init__(self, matcher, vocab_size: int, param: str | None = None):
        import llguidance.numpy as lln

        self.matcher = matcher
        self.param = param
        self._fill = lln.fill_next_token_bitmask
        self._bitmask = lln.allocate_token_bitmask(1, vocab_size)
        self.vocab_size = vocab_size

    def mask(self, logits: np.ndarray) -> None:
        """Set the logits of every token the grammar does not allow next to -inf (in place)."""
        self._fill(self.matcher, self._bitmask, 0)
        allowed = np.unpackbits(self._bitmask[0].view(np.uint8), bitorder="little")[:self.vocab_size].view(bool)
        width = min(len(logits), self.vocab_size)
        logits[:width][~allowed[:width]] = -np.inf
        logits[width:] = -np.inf  # columns the tokenizer does not know (padded embedding tables)

    def consume(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise Unfollowable(f"token {token} is not allowed by the grammar: {self.matcher.get_error()[:200]}",
                               self.param)

    @property
    def complete(self) -> bool:
        """Nothing may follow: the sequence ends here (finish_reason "stop")."""
        return self.matcher.is_stopped()


def _limits():
    import llguidance

    return llguidance.LLParserLimits(verbose_errors=False)  # no parser state or schema in client errors


def _describe(kind: str) -> str:
    return {"json": "JSON schema", "json_object": "JSON object format", "regex": "regex", "choice": "choice",
            "grammar": "grammar"}[kind]


def _first_line(messages: list[str]) -> str:
    text = messages[0] if messages else "invalid"
    return text.strip().splitlines()[0][:300]
