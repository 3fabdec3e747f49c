"""POST /tokenize and /detokenize, vLLM's shapes (vllm/entrypoints/serve/tokenize/protocol.py): a `prompt` or
chat `messages` to the model's token ids, and token ids back to text."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, model_validator

from frontend.protocol.chat import ChatMessage, Tool
from frontend.protocol.common import FieldError, OpenAIRequest, UnsupportedField

# Which ids exist depends on the model (its tokenizer answers invalid_token_ids); these are never token ids.
TokenId = Annotated[int, Field(ge=0, lt=2**63)]
CHAT_FIELDS = ("tools", "add_generation_prompt", "continue_final_message")


class TokenizeRequest(OpenAIRequest):
    """vLLM's TokenizeCompletionRequest (`prompt`) or TokenizeChatRequest (`messages`): exactly one of them.
    Messages are rendered as /v1/chat/completions renders them, so `count` is that request's prompt_tokens."""

    # vLLM's fields for a template other than the model's own: the engine would never see that prompt.
    unsupported_fields = ("chat_template", "chat_template_kwargs", "mm_processor_kwargs")

    model: str
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    # None: the engine's own rule (special tokens unless the text starts with the BOS token, as a rendered chat
    # template does); true/false force them, as in vLLM.
    add_special_tokens: bool | None = None
    return_token_strs: bool = False

    @model_validator(mode="after")
    def _prompt_or_messages(self):
        if self.prompt is None and self.messages is None:
            raise FieldError("prompt", "give `prompt` (a text) or `messages` (a chat)")
        if self.prompt is not None and self.messages is not None:
            raise FieldError("messages", "give `prompt` or `messages`, not both")
        if self.prompt is not None:
            chat_only = next((f for f in CHAT_FIELDS if f in self.model_fields_set), None)
            if chat_only:
                raise FieldError(chat_only, f"{chat_only} applies to `messages`, not to `prompt`")
        if self.continue_final_message:  # /v1/chat/completions does not continue a message either
            raise UnsupportedField("continue_final_message")
        return self


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int | None  # the model's context length (its /v1/models entry's)
    tokens: list[int]
    token_strs: list[str] | None = None  # with return_token_strs: each id's vocabulary entry


class DetokenizeRequest(OpenAIRequest):
    model: str
    tokens: list[TokenId]


class DetokenizeResponse(BaseModel):
    prompt: str
