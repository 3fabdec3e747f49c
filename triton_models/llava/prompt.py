"""Image placeholders in a prompt: each `<image>` becomes the image's tokens, its features placed at them.

As transformers' LlavaProcessor (and vLLM) do: the prompt holds one placeholder per image, in order; the
placeholder is repeated `image_seq_length` times before tokenizing, and the language model sees the image's
features in place of those tokens' embeddings.
"""

from __future__ import annotations

import numpy as np

from triton_models.llm.params import InvalidRequest
from triton_models.llm.sequence import PromptEmbeds
from triton_models.llm.tokenizer import TextTokenizer


class ImagePrompt:
    """Builds token ids and image embeddings for a prompt with image placeholders."""

    def __init__(self, tokenizer: TextTokenizer, image_token: str, image_token_id: int, image_seq_length: int):
        if tokenizer.tokenizer.token_to_id(image_token) != image_token_id:
            raise ValueError(f"the tokenizer does not map {image_token!r} to {image_token_id}")
        self.tokenizer = tokenizer
        self.image_token = image_token
        self.image_token_id = image_token_id
        self.image_seq_length = image_seq_length

    def check_text_only(self, prompt: str) -> None:
        """A prompt without images must not hold placeholders (they would be embedded as a plain token)."""
        count = prompt.count(self.image_token)
        if count:
            raise InvalidRequest(f"the prompt holds {count} {self.image_token} placeholder(s) but no image was sent")

    def token_ids(self, prompt: str, add_special_tokens: bool | None = None) -> list[int]:
        """Token ids of the prompt with each placeholder expanded to its image's tokens (what /tokenize answers
        for a prompt with images: the ids `build` gives the engine)."""
        expanded = prompt.replace(self.image_token, self.image_token * self.image_seq_length)
        return self.tokenizer.encode(expanded, add_special_tokens)

    def build(self, prompt: str, features: np.ndarray) -> tuple[list[int], PromptEmbeds]:
        """Token ids of the expanded prompt and the features [images, image tokens, hidden] at their positions."""
        images, tokens = features.shape[:2]
        if tokens != self.image_seq_length:
            raise ValueError(f"the vision model gave {tokens} features per image, expected {self.image_seq_length}")
        count = prompt.count(self.image_token)
        if count != images:
            raise InvalidRequest(f"the prompt holds {count} {self.image_token} placeholder(s) for {images} image(s)")
        ids = self.token_ids(prompt)
        positions = np.flatnonzero(np.asarray(ids) == self.image_token_id)
        if len(positions) != images * tokens:  # the placeholder merged with neighbouring text when tokenized
            raise InvalidRequest(f"the prompt's {self.image_token} placeholders do not tokenize as image tokens")
        return ids, PromptEmbeds(positions, features.reshape(images * tokens, -1))
