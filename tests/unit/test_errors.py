import pytest

from frontend import errors


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


def test_ensemble_prefix_is_removed_and_context_errors_are_recognised():
    error = errors.from_triton("StatusCode.INVALID_ARGUMENT",
                               "in ensemble 'emb', This model's maximum context length is 256 tokens, but ...")
    assert isinstance(error, errors.ContextLengthExceeded)
    assert error.message.startswith("This model's maximum") and error.code == "context_length_exceeded"


def test_overloaded_message_wins_over_status():
    assert isinstance(errors.from_triton("StatusCode.UNAVAILABLE", "engine overloaded: queue full"), errors.Overloaded)


def test_envelope_shape():
    body = errors.InvalidRequest("bad", param="input").envelope()
    assert body == {"error": {"message": "bad", "type": "invalid_request_error", "param": "input", "code": None}}
