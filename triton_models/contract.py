"""What the frontend and the Triton models agree on, declared once (stdlib only: both sides import it).

- The kind of a model, from its config (the rule below), and what each kind can do.
- The chat engine's `cache_salt` sampling parameter, which scopes its prefix cache.
- The image formats a chat image may come in.
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

import re
from dataclasses import dataclass

ENSEMBLE, ONNX, CHAT, VISION_CHAT, IMAGES, TOKENIZER, OTHER = (
    "ensemble", "onnx", "chat", "vision_chat", "images", "tokenizer", "other")

# Requests share cached prompt prefixes only when their `cache_salt` (vLLM's name) is equal; the frontend sends
# each API key's own. Only our chat engine (triton_models/llm, llava) takes it: the vLLM backend's
# SamplingParams refuses an unknown field, so a model of another kind is sent none.
CACHE_SALT = "cache_salt"
MAX_CACHE_SALT_CHARS = 256
SALTED_KINDS = frozenset({CHAT, VISION_CHAT})

# Chat images: what the frontend accepts and the LLaVA model decodes (Pillow format names). Nothing else is
# ever opened: Pillow's other decoders (EPS runs Ghostscript) are attack surface no client needs.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")

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
}

PARAMETERS: dict[str, dict[str, Parameter]] = {
    ENSEMBLE: {"max_inputs_per_request": Parameter("int", 1)},  # frontend.services.embeddings: chunk size
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
