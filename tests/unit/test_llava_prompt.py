"""Image placeholders expanded to image tokens, with the features at exactly those positions."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from triton_models.llava.prompt import ImagePrompt
from triton_models.llm.params import InvalidRequest
from triton_models.llm.tokenizer import TextTokenizer

SEQ = 3


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> ImagePrompt:
    folder = tmp_path_factory.mktemp("tokenizer")
    vocab = {"[UNK]": 0, "describe": 1, "this": 2, "and": 3, "that": 4}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.add_special_tokens(["<image>"])
    tokenizer.save(str(folder / "tokenizer.json"))
    return ImagePrompt(TextTokenizer(folder), "<image>", 5, SEQ)


def test_each_placeholder_becomes_the_image_tokens(prompts):
    features = np.arange(2 * SEQ * 2, dtype=np.float32).reshape(2, SEQ, 2)
    ids, embeds = prompts.build("describe <image> and <image> this", features)
    assert ids == [1, 5, 5, 5, 3, 5, 5, 5, 2]
    assert embeds.positions.tolist() == [1, 2, 3, 5, 6, 7]
    np.testing.assert_array_equal(embeds.values, features.reshape(6, 2))


@pytest.mark.parametrize(("prompt", "images", "message"), [
    ("describe <image>", 2, "1 <image> placeholder.* for 2 image"),
    ("describe this", 1, "0 <image> placeholder.* for 1 image"),
])
def test_placeholders_must_match_the_images(prompts, prompt, images, message):
    with pytest.raises(InvalidRequest, match=message):
        prompts.build(prompt, np.zeros((images, SEQ, 2), np.float32))


def test_placeholders_without_images_are_refused(prompts):
    prompts.check_text_only("describe this")
    with pytest.raises(InvalidRequest, match="no image"):
        prompts.check_text_only("describe <image>")


def test_the_tokenizer_must_know_the_image_token(prompts):
    with pytest.raises(ValueError, match="does not map"):
        ImagePrompt(prompts.tokenizer, "<image>", 7, SEQ)
