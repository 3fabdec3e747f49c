"""Engine settings from the model config's string parameters."""

from __future__ import annotations

import pytest

from triton_models.llm.engine import EngineConfig
from triton_models.llm.scheduler import Limits


def test_missing_parameters_take_defaults():
    config = EngineConfig.from_parameters({"openai_task": "chat"}, default_context=1024)
    assert config.context_length == 1024 and config.limits == Limits() and config.prefill_chunk == 512
    assert config.prefix_cache_tokens == 4096 and config.cancel_check_s == 0.1


def test_parameters_set_every_bound():
    config = EngineConfig.from_parameters({
        "context_length": "8192", "max_num_seqs": "4", "max_kv_tokens": "9000", "max_queue": "2",
        "max_prefill_tokens": "300", "prefill_chunk": "128", "prefix_cache_tokens": "0", "cancel_check_ms": "0",
    })
    assert config.context_length == 8192 and config.prefill_chunk == 128 and config.prefix_cache_tokens == 0
    assert config.cancel_check_s == 0
    assert config.limits == Limits(max_num_seqs=4, max_kv_tokens=9000, max_queue=2, max_prefill_tokens=300)


@pytest.mark.parametrize("key, value, message", [
    ("max_queue", "many", "max_queue must be an integer, got 'many'"),
    ("max_num_seqs", "0", "max_num_seqs must be >= 1, got 0"),
    ("prefix_cache_tokens", "-1", "prefix_cache_tokens must be >= 0, got -1"),
])
def test_bad_parameters_are_named(key, value, message):
    with pytest.raises(ValueError, match=message):
        EngineConfig.from_parameters({key: value})
