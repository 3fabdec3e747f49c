"""TritonPythonModel for the chat LLM: decoupled, speaking the vLLM backend's tensor contract.

`execute` parses each request, hands it to the engine and returns at once; the engine thread sends the
responses (a FINAL flag always). Errors are per-request error responses carrying a contract.ModelError
(triton_models.errors): bad input, a prompt over the context length, a full queue, a failed sequence.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from triton_models import config_parameters, tokenize, version_file
from triton_models.contract import ModelError
from triton_models.errors import error_response, internal_error
from triton_models.llm import metrics
from triton_models.llm.decoder import OnnxDecoder
from triton_models.llm.engine import Engine, EngineConfig
from triton_models.llm.params import InvalidRequest, SamplingParams
from triton_models.llm.sequence import RequestOutput
from triton_models.llm.tokenizer import TextTokenizer
from triton_models.metrics import TritonMetrics, instance_labels
from triton_models.ort_runner import execution_providers, spinning, thread_count

DEFAULT_MODEL_FILE = "model_q4.onnx"
FALLBACK_MODEL_FILE = "model.onnx"
DEFAULT_CONTEXT_LENGTH = 2048
FLAGS = ("return_finish_reason", "return_num_input_tokens", "return_num_output_tokens", "return_logprobs")

INPUTS = [
    {"name": "text_input", "data_type": "TYPE_STRING", "dims": [1]},
    {"name": "stream", "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
    {"name": "sampling_parameters", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
    {"name": "exclude_input_in_output", "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
    *({"name": flag, "data_type": "TYPE_BOOL", "dims": [1], "optional": True} for flag in FLAGS),
]
OUTPUTS = [
    {"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1]},
    {"name": "finish_reason", "data_type": "TYPE_STRING", "dims": [-1]},
    {"name": "num_input_tokens", "data_type": "TYPE_UINT32", "dims": [1]},
    {"name": "num_output_tokens", "data_type": "TYPE_UINT32", "dims": [1]},
    {"name": "logprobs", "data_type": "TYPE_STRING", "dims": [-1]},
]


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        tokenize.add_missing_tensors(auto_complete_model_config, INPUTS, OUTPUTS)
        tokenize.add_tensors(auto_complete_model_config)  # /tokenize and /detokenize, answered in _submit
        auto_complete_model_config.set_max_batch_size(0)
        auto_complete_model_config.set_model_transaction_policy({"decoupled": True})
        return auto_complete_model_config

    def initialize(self, args):
        self.logger = pb_utils.Logger
        _forward_engine_logs()
        model_config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(model_config):
            raise pb_utils.TritonModelException("this model must be decoupled: model_transaction_policy")
        params = config_parameters(model_config)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        model_file = version_file(version_dir, params.get("model_file") or DEFAULT_MODEL_FILE, "model_file")
        if not params.get("model_file") and not model_file.exists():
            model_file = version_dir / FALLBACK_MODEL_FILE
        config = EngineConfig.from_parameters(params, DEFAULT_CONTEXT_LENGTH)
        threads = thread_count(params)
        tokenizer = TextTokenizer(version_dir, params.get("eos_token"), params.get("bos_token"))
        # A decoder taking inputs_embeds (vision-language models) comes with its token-embedding table.
        embeddings_file = params.get("embeddings_file")
        if embeddings_file:
            embeddings = np.load(version_file(version_dir, embeddings_file, "embeddings_file"))
        else:
            embeddings = None
        # Decode steps run back to back, so the pool's threads spin between nodes like llama.cpp's (default on).
        spin = spinning(params, default=True)
        decoder = OnnxDecoder(model_file, threads, embeddings=embeddings, providers=execution_providers(params),
                              spin=spin)
        # One set of series per instance, deleted in finalize (triton_models.metrics says why).
        self.metrics = TritonMetrics(pb_utils, metrics.SPECS, instance_labels(args))
        try:
            self.engine = Engine(decoder, tokenizer, config, metrics.EngineMetrics(self.metrics)).start()
        except BaseException:
            self.metrics.close()  # a failed load leaves no series behind
            raise
        self.logger.log_info(
            f"{args['model_name']}: {model_file.name}, {decoder.shape.num_layers} layers, {config}, "
            f"{threads or 'default'} threads{' (spinning)' if spin else ''}, {decoder.session.get_providers()[0]}"
        )

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                self._submit(request, sender)
            except ModelError as exc:  # the one place this model's errors become Triton's
                _send_error(sender, exc)
            except Exception as exc:  # noqa: BLE001 - never raise out of execute
                self.logger.log_error(f"request failed: {exc!r}")
                _send_error(sender, internal_error())
        # decoupled: nothing to return, the engine thread answers through each request's sender

    def _submit(self, request, sender) -> None:
        if tokenize.is_entry_request(pb_utils, request):  # answered here, at once: the engine never sees it
            tensors = tokenize.answer(pb_utils, request, self.engine.tokenizer.tokenizer, self._prompt_ids)
            sender.send(pb_utils.InferenceResponse(output_tensors=tensors),
                        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return
        prompt = _scalar(request, "text_input")
        if prompt is None:
            raise InvalidRequest("text_input is required")
        try:
            prompt = prompt.decode("utf-8") if isinstance(prompt, bytes) else str(prompt)
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"text_input is not valid UTF-8 (byte {exc.start})") from exc
        stream = bool(_scalar(request, "stream", False))
        exclude = _scalar(request, "exclude_input_in_output")
        # As the vLLM backend: the prompt is prepended unless excluded, and streaming never prepends it.
        prepend = not bool(exclude) if exclude is not None else not stream
        if prepend and stream:
            raise InvalidRequest("exclude_input_in_output=false is not supported with stream=true")
        flags = {flag: bool(_scalar(request, flag, False)) for flag in FLAGS}
        params = SamplingParams.from_json(_scalar(request, "sampling_parameters"))
        sink = TritonSink(sender, flags)
        self.engine.submit(prompt, params, sink, stream=stream, prepend_prompt=prepend,
                           want_logprobs=flags["return_logprobs"], **self._prompt_inputs(request, prompt))

    def _prompt_ids(self, prompt: str, add_special_tokens: bool | None = None) -> list[int]:
        """The prompt's token ids as the engine tokenizes it (what /tokenize answers)."""
        return self.engine.tokenizer.encode(prompt, add_special_tokens)

    def _prompt_inputs(self, request, prompt: str) -> dict:
        """Extra `Engine.submit` arguments from the request (a vision-language model's image features)."""
        return {}

    def finalize(self):
        self.engine.stop()  # bounded: a step in progress ends in milliseconds; the queue fails UNAVAILABLE
        self.metrics.close()  # its series leave the endpoint (a late engine step then publishes nothing)
        self.logger.log_info("llm engine stopped")


class TritonSink:
    """Sends a request's outputs through its response sender, with the outputs the client asked for."""

    def __init__(self, sender, flags: dict[str, bool]):
        self.sender = sender
        self.flags = flags

    def is_cancelled(self) -> bool:
        return self.sender.is_cancelled()

    def send(self, output: RequestOutput | None, final: bool) -> None:
        flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
        if output is None:
            self.sender.send(flags=flags)
            return
        self.sender.send(pb_utils.InferenceResponse(output_tensors=self._tensors(output)), flags=flags)

    def fail(self, error: ModelError) -> None:
        _send_error(self.sender, error)

    def _tensors(self, output: RequestOutput) -> list:
        tensors = [pb_utils.Tensor("text_output", _strings(output.texts))]
        if self.flags["return_finish_reason"] and output.finish_reasons is not None:
            tensors.append(pb_utils.Tensor("finish_reason", _strings(output.finish_reasons)))
        if self.flags["return_num_input_tokens"]:
            count = np.array([output.num_input_tokens], np.uint32)
            tensors.append(pb_utils.Tensor("num_input_tokens", count))
        if self.flags["return_num_output_tokens"]:
            counts = np.array(output.num_output_tokens, np.uint32)
            tensors.append(pb_utils.Tensor("num_output_tokens", counts))
        if self.flags["return_logprobs"] and output.logprobs is not None:
            tensors.append(pb_utils.Tensor("logprobs", _strings([json.dumps(lp) for lp in output.logprobs])))
        return tensors


class _TritonLogHandler(logging.Handler):
    """The engine logs with `logging`; Triton's log gets those records through pb_utils.Logger."""

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if record.levelno >= logging.ERROR:
            pb_utils.Logger.log_error(message)
        elif record.levelno >= logging.WARNING:
            pb_utils.Logger.log_warn(message)
        else:
            pb_utils.Logger.log_info(message)


def _forward_engine_logs() -> None:
    engine_log = logging.getLogger("triton_models.llm")
    if not any(isinstance(h, _TritonLogHandler) for h in engine_log.handlers):
        engine_log.addHandler(_TritonLogHandler())
        engine_log.setLevel(logging.INFO)
        engine_log.propagate = False


def _scalar(request, name: str, default=None):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    values = tensor.as_numpy().reshape(-1)
    return values[0] if values.size else default


def _strings(values: list[str]) -> np.ndarray:
    return np.array([v.encode("utf-8") for v in values], dtype=np.object_)


def _send_error(sender, error: ModelError) -> None:
    sender.send(error_response(error), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
