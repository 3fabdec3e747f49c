"""A contract.ModelError as Triton's error: the encoded error as the message, a fitting Triton status code.

Every Triton model of ours reports client-facing failures through here, so the frontend can decode them
(frontend.errors.from_triton) whatever the model; `triton_python_backend_utils` exists only inside Triton.
"""

from __future__ import annotations

from triton_models.contract import GENERATION_FAILED, ModelError

# A failure that is not the client's: its cause goes to the model's log, the client hears only this.
INTERNAL_MESSAGE = "the model failed to process this request"


def internal_error() -> ModelError:
    return ModelError(GENERATION_FAILED, INTERNAL_MESSAGE)


def triton_error(error: ModelError):
    """pb_utils.TritonError carrying `error`: INVALID_ARG for 4xx, UNAVAILABLE for 503, INTERNAL otherwise."""
    import triton_python_backend_utils as pb_utils  # noqa: PLC0415 - only inside Triton's Python backend

    codes = pb_utils.TritonError
    code = codes.INVALID_ARG if error.status < 500 else codes.UNAVAILABLE if error.status == 503 else codes.INTERNAL
    return pb_utils.TritonError(error.encode(), code)


def error_response(error: ModelError):
    """An InferenceResponse that fails its request with `error`."""
    import triton_python_backend_utils as pb_utils  # noqa: PLC0415

    return pb_utils.InferenceResponse(error=triton_error(error))
