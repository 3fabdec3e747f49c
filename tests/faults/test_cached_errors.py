"""Triton 2.51's response cache stores an error response as an empty success, so the identical retry of a
refused request comes back with no outputs. The frontend's backend turns that into a clear error instead of
indexing into nothing (a KeyError, a 500 without a message); the frontend also checks token ids itself, so
through the API the retry is the same 400 (tests/faults/test_input_hygiene.py)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from frontend.errors import APIError, InvalidRequest
from frontend.triton import TritonBackend

pytestmark = pytest.mark.integration

ENCODER = "all-minilm-l6-v2_encoder"


async def test_a_cached_error_is_a_clear_error_not_a_missing_output(triton):
    backend = TritonBackend(triton.grpc_url, 30, api_secret=triton.api_secret or "")
    salt = uuid.uuid4().int % 1000  # inputs no earlier run put in the cache
    ids = np.array([[101, 1000 + salt, 40000, 102]], dtype=np.int64)  # 40000: past the 30522-token vocabulary
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    try:
        with pytest.raises(InvalidRequest) as first:
            await backend.infer(ENCODER, inputs, ["embedding"])
        assert first.value.code == "invalid_token_ids" and first.value.param == "input"
        with pytest.raises(APIError) as retry:
            await backend.infer(ENCODER, inputs, ["embedding"])
        # The same 400 once Triton stops caching errors; until then, a 500 that says what happened.
        assert retry.value.code == "invalid_token_ids" or "answered without its outputs" in retry.value.message
    finally:
        await backend.close()
