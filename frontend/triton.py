"""The frontend's only door to Triton: one long-lived gRPC aio channel, numpy in and out, errors mapped once.

`Backend` is the interface the services use; `TritonBackend` implements it over tritonclient.grpc.aio and
the API tests implement it with a small fake.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from frontend.errors import APIError, ServiceUnavailable, Timeout, from_triton

log = logging.getLogger(__name__)

# The key whose value unlocks Triton's restricted protocols (model repository, model config, ...): the
# launcher, compose.yaml and the chart start Triton with `...:<TRITON_API_HEADER>=<secret>`. Over HTTP it
# is the header itself; over gRPC Triton expects it as metadata with its own prefix (seen on 2.51).
TRITON_API_HEADER = "modelgate-triton-key"
TRITON_GRPC_API_METADATA = f"triton-grpc-protocol-{TRITON_API_HEADER}"

Tensors = dict[str, np.ndarray]


class Backend(Protocol):
    async def server_ready(self) -> bool: ...
    async def repository_index(self) -> list[dict]: ...
    async def model_config(self, name: str) -> dict: ...
    async def infer(self, model: str, inputs: Tensors, outputs: list[str], request_id: str = "") -> Tensors: ...
    def stream(self, model: str, inputs: Tensors, outputs: list[str],
               request_id: str = "") -> AsyncIterator[Tensors]: ...
    async def load_model(self, name: str, config: dict | None = None) -> None: ...
    async def unload_model(self, name: str, unload_dependents: bool = False) -> None: ...
    async def close(self) -> None: ...


def _infer_inputs(inputs: Tensors) -> list[grpcclient.InferInput]:
    result = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        result.append(tensor)
    return result


def _outputs(result, names: list[str]) -> Tensors:
    return {name: result.as_numpy(name) for name in names if result.get_output(name) is not None}


class TritonBackend:
    """Triton over gRPC. Every call has a deadline; failures become frontend.errors.APIError.

    `api_secret` (Settings.triton_api_secret) goes with every call as TRITON_GRPC_API_METADATA: Triton
    refuses its restricted protocols without it and ignores it elsewhere. `trace_metadata` (tracing on:
    frontend.tracing.Tracing.triton_metadata) adds the caller's trace context to every infer and stream call.
    """

    def __init__(self, url: str, timeout_s: float, lb_policy: str = "round_robin", api_secret: str = "",
                 trace_metadata: Callable[[], dict[str, str]] | None = None):
        self.url = url
        self.timeout_s = timeout_s
        self._headers = {TRITON_GRPC_API_METADATA: api_secret} if api_secret else None
        self._trace_metadata = trace_metadata
        channel_args = [
            ("grpc.max_send_message_length", 2**31 - 1),
            ("grpc.max_receive_message_length", 2**31 - 1),
            ("grpc.lb_policy_name", lb_policy),
            # gRPC's reconnect backoff grows to 120 s: after a Triton restart the frontend would answer 503 for
            # that long. Triton is one hop away; retry often.
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        self._client = grpcclient.InferenceServerClient(url, channel_args=channel_args)

    def _channel_error(self, exc: grpc.RpcError) -> APIError:
        """The channel itself failed: a deadline is 504, anything else 503 (the address stays in the log)."""
        code = exc.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return Timeout(f"the model did not answer within {self.timeout_s:g} s (MODELGATE_REQUEST_TIMEOUT_S)")
        log.warning("Triton at %s: %s", self.url, code.name)
        return ServiceUnavailable(f"the inference server is unreachable ({code.name}); retry shortly")

    def _inference_headers(self) -> dict[str, str] | None:
        """Metadata of one inference call: the secret, and the current trace context when tracing is on."""
        if self._trace_metadata is None:
            return self._headers
        return {**(self._headers or {}), **self._trace_metadata()} or None

    async def _call(self, coro):
        try:
            return await coro
        except InferenceServerException as exc:
            raise from_triton(exc.status(), exc.message()) from exc
        except grpc.RpcError as exc:
            raise self._channel_error(exc) from exc

    async def server_ready(self) -> bool:
        try:
            ready = self._client.is_server_ready(headers=self._headers, client_timeout=5)
            return bool(await self._call(ready))
        except APIError:
            return False

    async def repository_index(self) -> list[dict]:
        index = await self._call(self._client.get_model_repository_index(
            headers=self._headers, as_json=True, client_timeout=10))
        return index.get("models", [])

    async def model_config(self, name: str) -> dict:
        config = await self._call(self._client.get_model_config(
            name, headers=self._headers, as_json=True, client_timeout=10))
        return config["config"]

    async def infer(self, model: str, inputs: Tensors, outputs: list[str], request_id: str = "") -> Tensors:
        requested = [grpcclient.InferRequestedOutput(name) for name in outputs]
        result = await self._call(self._client.infer(
            model, _infer_inputs(inputs), outputs=requested, request_id=request_id,
            headers=self._inference_headers(), client_timeout=self.timeout_s,
        ))
        answered = _outputs(result, outputs)
        missing = [name for name in outputs if name not in answered]
        if missing:  # Triton 2.51's response cache keeps an error as an empty success: never index into it
            log.error("%s answered without %s (request %s)", model, ", ".join(missing), request_id)
            raise APIError(f"the model `{model}` answered without its outputs; retry with different input")
        return answered

    async def stream(self, model: str, inputs: Tensors, outputs: list[str],
                     request_id: str = "") -> AsyncIterator[Tensors]:
        """Responses of a decoupled model; leaving the loop early cancels the Triton stream."""

        async def requests():
            yield {"model_name": model, "inputs": _infer_inputs(inputs), "request_id": request_id,
                   "outputs": [grpcclient.InferRequestedOutput(name) for name in outputs]}

        responses = self._client.stream_infer(requests(), stream_timeout=self.timeout_s,
                                              headers=self._inference_headers())
        try:
            async for result, error in responses:
                if error is not None:
                    raise from_triton(error.status(), error.message())
                yield _outputs(result, outputs)
        except grpc.RpcError as exc:
            raise self._channel_error(exc) from exc
        finally:
            responses.cancel()  # reaches the model as is_cancelled(): a client that left stops its sequence

    async def load_model(self, name: str, config: dict | None = None) -> None:
        import json  # noqa: PLC0415

        await self._call(self._client.load_model(
            name, headers=self._headers, config=json.dumps(config) if config else None,
            client_timeout=self.timeout_s))

    async def unload_model(self, name: str, unload_dependents: bool = False) -> None:
        await self._call(self._client.unload_model(
            name, headers=self._headers, unload_dependents=unload_dependents, client_timeout=30))

    async def close(self) -> None:
        await self._client.close()
