import numpy as np
import pytest

from triton_models.tokenizer import InputTooLong, TextTokenizer


@pytest.fixture(scope="module")
def folder():
    from export_scripts.embeddings import default_model_path

    return default_model_path()  # the package ships tokenizer.json and tokenizer_config.json


def test_pads_to_the_longest_input(folder):
    tok = TextTokenizer(folder, max_length=256)
    encoded = tok.encode(["hello", "hello there friend"])
    assert encoded.input_ids.shape == encoded.attention_mask.shape == (2, 5)
    assert encoded.lengths.tolist() == [3, 5]
    assert encoded.attention_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert encoded.input_ids[0, 3:].tolist() == [tok.pad_id] * 2
    assert encoded.input_ids.dtype == np.int64


def test_refuses_inputs_over_the_limit(folder):
    tok = TextTokenizer(folder, max_length=4)
    with pytest.raises(InputTooLong) as err:
        tok.encode(["ok", "one two three four"])
    assert err.value.index == 1 and err.value.length == 6 and "maximum context length is 4" in str(err.value)


def test_matches_the_hugging_face_tokenizer(folder):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(folder))
    text = "Tokenisation runs inside Triton, not in the frontend."
    assert TextTokenizer(folder, 256).encode([text]).input_ids[0].tolist() == hf(text)["input_ids"]
