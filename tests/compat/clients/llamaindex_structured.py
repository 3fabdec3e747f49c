"""LlamaIndex's `OpenAILike` against modelgate: `structured_predict` through function calling (a required
tool, LlamaIndex's default for a function-calling model), through structured outputs (`response_format`
json_schema, `should_use_structured_outputs=True`), and `as_structured_llm(...).chat`.

Prints the object and the request LlamaIndex sent (read off its HTTP client). Exits non-zero when LlamaIndex
fails, the server's raw answers on stderr."""

from __future__ import annotations

import json

import httpx
from llama_index.core import PromptTemplate
from llama_index.core.llms import ChatMessage
from llama_index.llms.openai_like import OpenAILike
from pydantic import BaseModel

from common import BASE_URL, HEADERS, MODEL, case, emit, show


class User(BaseModel):
    """A person mentioned in a text."""

    name: str
    age: int


class Country(BaseModel):
    """A country and its capital."""

    name: str
    capital: str


def main(name: str) -> None:
    sent, answers = [], []

    def on_response(response: httpx.Response) -> None:
        sent.append(json.loads(response.request.content))
        answers.append(response.read().decode())

    llm = OpenAILike(model=MODEL, api_base=BASE_URL, api_key="unused", is_chat_model=True,
                     is_function_calling_model=True, context_window=2048, max_tokens=120, temperature=0,
                     max_retries=0, default_headers=HEADERS,
                     should_use_structured_outputs=name == "structured_outputs",
                     http_client=httpx.Client(event_hooks={"response": [on_response]}))
    try:
        if name == "as_structured_llm":
            question = ChatMessage(role="user", content="Tell me about France.")
            answer = llm.as_structured_llm(Country).chat([question]).raw
        else:
            answer = llm.structured_predict(User, PromptTemplate("Extract the person from this text: {text}"),
                                            text="John Smith is 31 years old.")
    except Exception:
        show(answers)
        raise
    keys = ("response_format", "tools", "tool_choice", "parallel_tool_calls")
    emit({"type": type(answer).__name__, "answer": answer.model_dump(),
          "sent": {key: sent[-1].get(key) for key in keys}})


if __name__ == "__main__":
    main(case())
