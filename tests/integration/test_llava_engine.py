"""The chat engine on tiny-llava-random's language model (a decoder taking inputs_embeds), in-process.

Prompt embeddings (image features) must reach the model wherever the prompt lands: alone, in a batch with
text-only prompts, split into prefill chunks, and re-prefilled after preemption; and the answer must not depend
on where it landed (issue 13).
"""

from __future__ import annotations

import numpy as np
import pytest

from export_scripts import llava
from export_scripts.__main__ import main as export_main
from tests.conftest import REPOSITORY
from tests.integration.test_llm_engine import Sink, run
from triton_models.llava.prompt import ImagePrompt
from triton_models.llm.decoder import OnnxDecoder
from triton_models.llm.engine import Engine, EngineConfig
from triton_models.llm.params import SamplingParams
from triton_models.llm.scheduler import Limits
from triton_models.llm.sequence import PromptEmbeds
from triton_models.llm.tokenizer import TextTokenizer

GREEDY = SamplingParams.from_dict({"temperature": 0, "ignore_eos": True, "max_tokens": 8})
PROMPT = "<|im_start|>user\n<image>\nWhat is this?<|im_end|>\n<|im_start|>assistant\n"
TEXTS = ["Hello", "A somewhat longer plain prompt about the weather today", "Why?"]


@pytest.fixture(scope="module")
def parts():
    assert export_main(["llava", f"--repository={REPOSITORY}"]) == 0
    version = REPOSITORY / llava.TINY_NAME / "1"
    decoder = OnnxDecoder(version / llava.LM_FILE, threads=1, embeddings=np.load(version / llava.EMBEDDINGS_FILE))
    tokenizer = TextTokenizer(version)
    seq_len = llava.image_seq_length(llava.tiny_model()[1])
    prompts = ImagePrompt(tokenizer, llava.IMAGE_TOKEN, tokenizer.tokenizer.token_to_id(llava.IMAGE_TOKEN), seq_len)
    return decoder, tokenizer, prompts


def features(parts, seed: int) -> np.ndarray:
    decoder, _, prompts = parts
    hidden = decoder.embeddings.shape[1]
    return np.random.default_rng(seed).normal(0, 1, (1, prompts.image_seq_length, hidden)).astype(np.float32)


def engine(parts, prefill_chunk: int = 512, **limits) -> Engine:
    decoder, tokenizer, _ = parts
    return Engine(decoder, tokenizer, EngineConfig(512, Limits(**limits), prefill_chunk=prefill_chunk))


def submit_image(eng: Engine, parts, seed: int) -> Sink:
    ids, embeds = parts[2].build(PROMPT, features(parts, seed))
    sink = Sink()
    eng.submit(PROMPT, GREEDY, sink, stream=True, prompt_ids=ids, prompt_embeds=embeds)
    return sink


def submit_text(eng: Engine, prompt: str) -> Sink:
    sink = Sink()
    eng.submit(prompt, GREEDY, sink, stream=True)
    return sink


def image_alone(parts, seed: int, **config) -> str:
    eng = engine(parts, **config)
    sink = submit_image(eng, parts, seed)
    run(eng, [sink])
    return sink.text


def test_the_features_reach_the_model(parts):
    assert image_alone(parts, 1) != image_alone(parts, 2)


def test_image_prompt_in_a_batch_with_text_prompts(parts):
    eng = engine(parts)
    texts_alone = []
    for prompt in TEXTS:
        one = engine(parts)
        sink = submit_text(one, prompt)
        run(one, [sink])
        texts_alone.append(sink.text)
    sinks = [submit_text(eng, TEXTS[0]), submit_image(eng, parts, 1), *(submit_text(eng, p) for p in TEXTS[1:])]
    run(eng, sinks)
    assert sinks[1].text == image_alone(parts, 1)
    assert [s.text for i, s in enumerate(sinks) if i != 1] == texts_alone


def test_chunked_prefill_places_features_across_chunks(parts):
    # chunks of 5 tokens: the image tokens (positions 3..18) span four chunks
    assert image_alone(parts, 1, prefill_chunk=5) == image_alone(parts, 1)


def test_preempted_image_prompt_is_prefilled_again_with_its_features(parts, caplog):
    # both prompts fit at admission, not once they grow: the second is preempted and prefilled again
    prompt_tokens = len(parts[2].build(PROMPT, features(parts, 1))[0])
    eng = engine(parts, max_kv_tokens=2 * (prompt_tokens + 2), max_num_seqs=2)
    sinks = [submit_image(eng, parts, 1), submit_image(eng, parts, 2)]
    with caplog.at_level("INFO", logger="triton_models.llm"):
        run(eng, sinks)
    assert "preempting" in caplog.text
    assert [s.text for s in sinks] == [image_alone(parts, 1), image_alone(parts, 2)]


def test_prompt_embeds_place_only_the_tokens_in_range():
    embeds = PromptEmbeds(np.array([2, 3, 7]), np.array([[1.0], [2.0], [3.0]]))
    row = np.zeros((6, 1))
    embeds.place(row, start=2, end=7)  # tokens 2..6 at columns 0..4: positions 2 and 3, not 7
    assert row[:, 0].tolist() == [1, 2, 0, 0, 0, 0]


def test_an_image_prompt_gets_bit_for_bit_its_logprobs_alone(parts):
    """Issue 13 for the vision model's decoder: beside text prompts of other lengths, joining mid-decode or split
    into chunks, an image prompt's logprobs are exactly those it gets alone."""
    params = SamplingParams.from_dict({"temperature": 0, "ignore_eos": True, "max_tokens": 8, "logprobs": 3})

    def start(eng: Engine, prompt: str | None) -> Sink:
        sink = Sink()
        if prompt is None:
            ids, embeds = parts[2].build(PROMPT, features(parts, 1))
            eng.submit(PROMPT, params, sink, stream=True, prompt_ids=ids, prompt_embeds=embeds, want_logprobs=True)
        else:
            eng.submit(prompt, params, sink, stream=True, want_logprobs=True)
        return sink

    prompts = [TEXTS[0], None, *TEXTS[1:]]
    expected = []
    for prompt in prompts:
        eng = engine(parts)
        sink = start(eng, prompt)
        run(eng, [sink])
        expected.append(sink.logprobs)
    for chunk in (512, 7):
        eng = engine(parts, prefill_chunk=chunk)
        sinks = [start(eng, p) for p in prompts[:2]]
        eng.step()
        sinks += [start(eng, p) for p in prompts[2:]]
        run(eng, sinks)
        assert [s.logprobs for s in sinks] == expected, f"prefill chunk {chunk}"


def test_an_image_prompt_follows_a_json_schema(parts):
    """Structured outputs on the vision model's decoder: random weights, yet the answer validates."""
    import json

    schema = {"type": "object", "properties": {"colour": {"enum": ["red", "green"]}, "count": {"type": "integer",
              "minimum": 0, "maximum": 9}}, "required": ["colour", "count"], "additionalProperties": False}
    params = SamplingParams.from_dict({"temperature": 1.0, "seed": 1, "max_tokens": 60,
                                       "structured_outputs": {"json": schema}})
    eng = engine(parts)
    ids, embeds = parts[2].build(PROMPT, features(parts, 1))
    sink = Sink()
    eng.submit(PROMPT, params, sink, stream=True, prompt_ids=ids, prompt_embeds=embeds)
    run(eng, [sink])
    answer = json.loads(sink.text)
    assert answer["colour"] in ("red", "green") and 0 <= answer["count"] <= 9 and sink.finish_reason == "stop"
