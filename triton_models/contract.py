"""What the frontend and the Triton models agree on, declared once (stdlib only: both sides import it).

- The kind of a model, from its config (the rule below), and what each kind can do.
- Errors a model reports for the client (`ModelError`: code, message, param), carried as data inside
  Triton's error message, and the HTTP status of each code.
- The chat engine's request limits (n, logprobs, stop sequences), enforced by the frontend before the call.
- The chat engine's `cache_salt` sampling parameter, which scopes its prefix cache.
- The image formats a chat image may come in.
- The tokenizer entry points (/tokenize, /detokenize) every text model answers with its own tokenizer.
- How a model of each task scores text pairs (/v1/rerank, /v1/score).
- Which config `parameters` an operator may change when (re)loading a model, per model kind.

The frontend's admin API checks a load's config override against this list (`POST /admin/models/load`);
anything not declared here (`model_file`, `chat_template`, another model's name...) can only change by
editing the model repository. Only tuning knobs are declared: limits, batch and thread settings that the
model's own code reads and checks again at `initialize`. No heavy imports: the frontend imports this module.

A model's kind comes from its config, by this rule:
  `platform: "ensemble"`                                   -> ENSEMBLE (its parameters: read by the frontend)
  `backend: "onnxruntime"` (or platform `onnxruntime_onnx`) -> ONNX     (triton_models/onnxruntime_backend.py)
  `backend: "python"` and `openai_task: "chat"`/`"completions"`
      with `supports_images: "true"`                       -> VISION_CHAT (triton_models/llava)
      otherwise                                            -> CHAT     (triton_models/llm)
  `backend: "python"` and `openai_task: "images"`          -> IMAGES   (triton_models/diffusion)
  `backend: "python"` and no `openai_task`                 -> TOKENIZER (triton_models/tokenizer.py)
  anything else (vLLM, TensorRT, other tasks)              -> OTHER: no parameters may change
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

ENSEMBLE, ONNX, CHAT, VISION_CHAT, IMAGES, TOKENIZER, OTHER = (
    "ensemble", "onnx", "chat", "vision_chat", "images", "tokenizer", "other")

# -- Errors ------------------------------------------------------------------------------------------------
# Triton carries a model's error as text and a status code. A model that fails a request for a reason the
# client should hear raises ModelError; its `encode()` is the text, and the frontend decodes it once
# (frontend.errors.from_triton) into OpenAI's envelope with the status below. Any other text is an internal
# error, logged and reported without its details.
INVALID_REQUEST = "invalid_request"
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
UNSUPPORTED_PARAMETER = "unsupported_parameter"
INVALID_IMAGE = "invalid_image"
INVALID_TOKEN_IDS = "invalid_token_ids"
OVERLOADED = "overloaded"
UNAVAILABLE = "model_unavailable"  # shutting down, unloading
GENERATION_FAILED = "generation_failed"  # this request's sequence failed inside the engine (the others go on)
ERROR_STATUS: dict[str, int] = {
    INVALID_REQUEST: 400, CONTEXT_LENGTH_EXCEEDED: 400, UNSUPPORTED_PARAMETER: 400, INVALID_IMAGE: 400,
    INVALID_TOKEN_IDS: 400, OVERLOADED: 503, UNAVAILABLE: 503, GENERATION_FAILED: 500,
}
_ERROR_MARK = "modelgate-error:"  # Triton may put its own words before the text ("in ensemble 'x', ")


class ModelError(Exception):
    """A failure the client should hear about: `code` (one of ERROR_STATUS), a message meant for a person
    (what they did wrong, never an internal repr) and the request field it concerns."""

    def __init__(self, code: str, message: str, param: str | None = None):
        if code not in ERROR_STATUS:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code, self.message, self.param = code, message, param

    @property
    def status(self) -> int:
        return ERROR_STATUS[self.code]

    def encode(self) -> str:
        return _ERROR_MARK + json.dumps({"code": self.code, "message": self.message, "param": self.param})

    @classmethod
    def decode(cls, text: str | None) -> ModelError | None:
        """The error `encode()` wrote into `text` (anywhere in it), or None."""
        _, mark, data = (text or "").partition(_ERROR_MARK)
        if not mark:
            return None
        try:
            fields, _ = json.JSONDecoder().raw_decode(data)
            return cls(str(fields["code"]), str(fields["message"]), fields.get("param"))
        except (ValueError, KeyError, TypeError):
            return None


# -- Chat engine limits ------------------------------------------------------------------------------------
# The chat engine's constrained decoding (vLLM's StructuredOutputsParams, as the `structured_outputs` sampling
# parameter): exactly one of these keys. `json` is a JSON schema, `json_object` true for any JSON object,
# `regex` a regular expression, `choice` a list of strings, `grammar` a Lark grammar (llguidance's dialect).
STRUCTURED_OUTPUTS = "structured_outputs"
STRUCTURED_KINDS = ("json", "json_object", "regex", "choice", "grammar")
STRUCTURED_PARAM = "param"  # optional: the request field the constraint came from, named in its errors
# JSON whitespace the grammars allow between tokens (llguidance's default is unbounded: a small model can pad
# forever): one optional newline and up to 8 spaces, so compact and indented JSON both parse.
JSON_WHITESPACE = r"\n? {0,8}"


_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")  # name -> schema
_VALUES = ("enum", "const", "default", "examples")  # data, not schemas


def closed_objects(schema):
    """The schema with `additionalProperties: false` on every object that declares `properties` and says
    nothing of others (as vLLM's default grammars do): a plain pydantic model's schema leaves it out, and a small
    model then invents keys until max_tokens. A free-form object (no `properties`) stays open."""
    if isinstance(schema, list):
        return [closed_objects(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: closed_objects(sub) for name, sub in value.items()}
        else:
            out[key] = value if key in _VALUES else closed_objects(value)
    if isinstance(out.get("properties"), dict) and "additionalProperties" not in out \
            and "unevaluatedProperties" not in out:
        out["additionalProperties"] = False
    return out
LOGIT_BIAS = "logit_bias"  # {token id: bias in [-100, 100]}, at most MAX_LOGIT_BIAS entries (OpenAI's bounds)
MAX_LOGIT_BIAS = 300
MAX_N = 16  # choices per request
MAX_LOGPROBS = 20  # top logprobs per token (OpenAI: 20 for chat, 5 for completions; vLLM: 20)
MAX_STOP_SEQUENCES = 16

# The format a chat model writes tool calls in, a config parameter the exporter sets from the chat template
# (vLLM's --tool-call-parser names); the frontend's parsers (frontend/tools) are keyed by these names.
TOOL_CALL_PARSER = "tool_call_parser"
TOOL_CALL_PARSERS = ("hermes", "llama3_json")
DEFAULT_TOOL_CALL_PARSER = "hermes"

# Requests share cached prompt prefixes only when their `cache_salt` (vLLM's name) is equal; the frontend sends
# each API key's own. Only our chat engine (triton_models/llm, llava) takes it: the vLLM backend's
# SamplingParams refuses an unknown field, so a model of another kind is sent none.
CACHE_SALT = "cache_salt"
MAX_CACHE_SALT_CHARS = 256
SALTED_KINDS = frozenset({CHAT, VISION_CHAT})

# Chat images: what the frontend accepts and the LLaVA model decodes (Pillow format names). Nothing else is
# ever opened: Pillow's other decoders (EPS runs Ghostscript) are attack surface no client needs.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")

# Image edits (/v1/images/edits, /variations; triton_models/diffusion): an images model whose config says
# `supports_edits: "true"` takes `image` (UINT8 [H, W, 3]), `mask` (UINT8 [H, W], >= 128 where to redraw) and
# `strength` (FP64, so that int(steps * strength) is what the client meant: the fraction of the schedule
# redrawn, (0, 1]). Defaults: diffusers' img2img pipeline's; its inpainting pipeline's (the masked area drawn
# anew); and for a variation, a redraw with no prompt to steer it, less: SD's schedule at 0.6 keeps 0.52 of the
# image's latents under the noise (0.29 at 0.8), so composition and colours survive and the details change.
SUPPORTS_EDITS = "supports_edits"
EDIT_STRENGTH = 0.8
INPAINT_STRENGTH = 1.0
VARIATION_STRENGTH = 0.6


def edit_steps(steps: int, strength: float) -> int:
    """How many of a `steps`-step schedule an edit runs: the last int(steps * strength), as diffusers'
    img2img `get_timesteps`; 0 is refused (the model's 400 names `strength`)."""
    return min(int(steps * strength), steps)


# Tokenizer entry points (/tokenize, /detokenize): answered by the model's own tokenizer, so a count is the
# engine's count. A chat model answers them itself; an embeddings model through its tokenizer step (the
# ensemble's TOKENIZER_MODEL parameter). Optional inputs beside the model's `text_input`, added to its config
# at load (triton_models/tokenize.py), so no re-export is needed for them:
TOKENIZE = "tokenize"  # BOOL [1]: answer TOKEN_IDS and TOKEN_STRS of the one `text_input`; nothing else runs
ADD_SPECIAL_TOKENS = "add_special_tokens"  # BOOL [1], with TOKENIZE: force special tokens on/off (vLLM's field)
DETOKENIZE = "detokenize"  # INT64 [-1]: answer DETOKENIZED, the text of these ids (`text_input` is ignored)
TOKEN_IDS, TOKEN_STRS, DETOKENIZED = "token_ids", "token_strs", "text_output"
TOKENIZER_MODEL = "tokenizer_model"

# Scoring (/v1/rerank, /v1/score): how a served model scores (query, document) pairs, by the `openai_task` its
# config declares. A cross-encoder ("rerank", export_scripts/rerank.py) reads each pair and its ensemble returns
# `score`, the sigmoid of its one logit, in [0, 1]; any embeddings model scores by the cosine similarity of the
# two texts' embeddings, in [-1, 1].
RERANK_TASK = "rerank"
CROSS_ENCODER, BI_ENCODER = "cross_encoder", "bi_encoder"
SCORING: dict[str, str] = {RERANK_TASK: CROSS_ENCODER, "embeddings": BI_ENCODER}

# Top-level config fields a load may override, per kind: an ensemble has no instances or batcher of its own.
INSTANCE_FIELDS = frozenset({"instance_group", "dynamic_batching", "max_batch_size", "parameters"})
FIELDS: dict[str, frozenset[str]] = {ENSEMBLE: frozenset({"parameters"})}

_NAMES = re.compile(r"^\s*[A-Za-z][A-Za-z0-9_]*\s*(,\s*[A-Za-z][A-Za-z0-9_]*\s*)*$")
_BOOLEANS = ("true", "false", "1", "0")  # what triton_models.ort_runner.spinning accepts


@dataclass(frozen=True)
class Parameter:
    """A declared parameter: its type ("int", "float", "bool" or "names", a comma-separated list of
    identifiers) and, for numbers, the smallest value the model accepts."""

    type: str
    minimum: float | None = None

    def problem(self, value: str) -> str | None:
        """Why `value` is not valid for this parameter, or None."""
        if self.type == "bool":
            return None if value.strip().lower() in _BOOLEANS else "must be true or false"
        if self.type == "names":
            return None if _NAMES.match(value) else "must be a comma-separated list of names"
        try:
            number = int(value) if self.type == "int" else float(value)
        except ValueError:
            return f"must be {'an integer' if self.type == 'int' else 'a number'}"
        if self.minimum is not None and number < self.minimum:
            return f"must be >= {self.minimum:g}"
        return None


_THREADS = {
    "intra_op_thread_count": Parameter("int", 0),  # triton_models.ort_runner.thread_count
    "execution_providers": Parameter("names"),  # triton_models.ort_runner.execution_providers
}
_CHAT = {
    **_THREADS,
    "intra_op_spinning": Parameter("bool"),
    # triton_models.llm.config.EngineConfig.from_parameters, with triton_models.llm.scheduler.Limits
    "max_num_seqs": Parameter("int", 1),
    "max_kv_tokens": Parameter("int", 1),
    "max_queue": Parameter("int", 1),
    "max_prefill_tokens": Parameter("int", 1),
    "prefill_chunk": Parameter("int", 1),
    "prefix_cache_tokens": Parameter("int", 0),
    "cancel_check_ms": Parameter("int", 0),
}

PARAMETERS: dict[str, dict[str, Parameter]] = {
    ENSEMBLE: {"max_inputs_per_request": Parameter("int", 1)},  # frontend.services.embeddings, .rerank: chunk size
    ONNX: dict(_THREADS),
    CHAT: _CHAT,
    VISION_CHAT: {**_CHAT, "max_images": Parameter("int", 1)},  # triton_models.llava.model
    IMAGES: {  # triton_models.diffusion.pipeline.Settings.from_parameters
        "default_steps": Parameter("int", 1),
        "default_guidance_scale": Parameter("float", 0),
        "max_n": Parameter("int", 1),
        "max_steps": Parameter("int", 1),
    },
    TOKENIZER: {},
    OTHER: {},
}


def model_kind(config: dict) -> str:
    """The kind of a model, from its config in Triton's JSON shape (see the module's docstring)."""
    backend, platform = config.get("backend", ""), config.get("platform", "")
    if platform == "ensemble":
        return ENSEMBLE
    if backend == "onnxruntime" or (not backend and platform == "onnxruntime_onnx"):
        return ONNX
    if backend != "python":
        return OTHER
    parameters = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    task = parameters.get("openai_task", "")
    if task in ("chat", "completions"):
        return VISION_CHAT if parameters.get("supports_images") == "true" else CHAT
    if task == "images":
        return IMAGES
    return TOKENIZER if not task else OTHER


def fields(kind: str) -> frozenset[str]:
    """The top-level config fields a load may override for this kind."""
    return FIELDS.get(kind, INSTANCE_FIELDS)
