"""frontend/chat_template.py renders chat templates byte for byte as transformers' apply_chat_template."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from frontend.chat_template import render_chat
from frontend.errors import APIError, InvalidRequest
from tests.integration import llm_tiny

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
     {"role": "user", "content": "Tell me a joke about \"quotes\" & <tags>."}],
]
# Features transformers' environment adds: tojson without HTML escaping, loop controls, raise_exception,
# namespace, trim_blocks/lstrip_blocks.
FEATURES = """{% set ns = namespace(n=0) %}
{% for m in messages %}
    {% if m['role'] == 'system' %}{% continue %}{% endif %}
    {% set ns.n = ns.n + 1 %}
[{{ ns.n }}] {{ m | tojson }}
{% endfor %}
{% if add_generation_prompt %}{{ bos_token }}>{% endif %}"""


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(llm_tiny.tokenizer_dir()))


def params(tokenizer, template: str | None = None) -> dict:
    return {"chat_template": template or tokenizer.chat_template, "bos_token": tokenizer.bos_token,
            "eos_token": tokenizer.eos_token}


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("template", [None, FEATURES], ids=["smollm2", "features"])
def test_same_text_as_transformers(tokenizer, messages, template):
    expected = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=True)
    assert render_chat(params(tokenizer, template), messages, model="m") == expected


def test_without_generation_prompt(tokenizer):
    messages = CONVERSATIONS[2]
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert render_chat(params(tokenizer), messages, model="m", add_generation_prompt=False) == expected


def test_template_refusal_is_invalid_request():
    template = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}x"
    with pytest.raises(InvalidRequest, match="first must be user") as caught:
        render_chat({"chat_template": template}, [{"role": "assistant", "content": "a"}], model="m")
    assert caught.value.param == "messages"


def test_missing_and_broken_templates():
    with pytest.raises(InvalidRequest) as caught:
        render_chat({}, CONVERSATIONS[0], model="m")
    assert caught.value.code == "chat_template_missing"
    with pytest.raises(APIError) as broken:
        render_chat({"chat_template": "{% for %}"}, CONVERSATIONS[0], model="m")
    assert broken.value.status == 500


def test_sandbox_refuses_python_internals():
    with pytest.raises(InvalidRequest):
        render_chat({"chat_template": "{{ messages.__class__.__mro__ }}"}, CONVERSATIONS[0], model="m")
