import pytest

from frontend import errors
from triton_models import contract


@pytest.mark.parametrize("status, cls, http", [
    ("StatusCode.INVALID_ARGUMENT", errors.InvalidRequest, 400),
    ("StatusCode.NOT_FOUND", errors.ModelNotFound, 404),
    ("StatusCode.UNAVAILABLE", errors.ServiceUnavailable, 503),
    ("StatusCode.RESOURCE_EXHAUSTED", errors.Overloaded, 503),
    ("StatusCode.DEADLINE_EXCEEDED", errors.Timeout, 504),
    ("StatusCode.INTERNAL", errors.APIError, 500),
    (None, errors.APIError, 500),
])
def test_grpc_status_maps_once_to_http(status, cls, http):
    error = errors.from_triton(status, "something")
    assert type(error) is cls and error.status == http


def test_a_model_error_is_decoded_from_the_message_whatever_triton_puts_before_it():
    text = "in ensemble 'emb', " + contract.ModelError(contract.CONTEXT_LENGTH_EXCEEDED, "too long", "input").encode()
    error = errors.from_triton("StatusCode.INVALID_ARGUMENT", text)
    assert isinstance(error, errors.ContextLengthExceeded)
    assert (error.message, error.param, error.code) == ("too long", "input", "context_length_exceeded")


def test_a_model_error_code_wins_over_the_grpc_status():
    text = contract.ModelError(contract.OVERLOADED, "engine overloaded: queue full").encode()
    assert isinstance(errors.from_triton("StatusCode.INTERNAL", text), errors.Overloaded)


def test_plain_text_is_never_classified_by_its_words():
    error = errors.from_triton("StatusCode.UNAVAILABLE", "engine overloaded: queue full")
    assert type(error) is errors.ServiceUnavailable


def test_envelope_shape():
    body = errors.InvalidRequest("bad", param="input").envelope()
    assert body == {"error": {"message": "bad", "type": "invalid_request_error", "param": "input", "code": None}}


def test_an_unknown_triton_failure_keeps_its_words_in_the_log(caplog):
    error = errors.from_triton("StatusCode.INTERNAL", "Stub process 'llm_0_0' is not healthy at 0x7f00")
    assert error.status == 500 and "Stub process" not in error.message and "x-request-id" in error.message
    assert "Stub process 'llm_0_0' is not healthy" in caplog.text
