"""instructor, as its docs use it, against modelgate: `from_openai` in JSON_SCHEMA mode (`response_format`
json_schema) or TOOLS mode (one forced function call) pulls a pydantic object out of a sentence.

Prints the object, what instructor sent and how many tool calls came back. Exits non-zero when instructor
fails (no valid object, or an answer cut by max_tokens), the server's raw answer on stderr."""

from __future__ import annotations

import instructor
from openai import OpenAI
from pydantic import BaseModel

from common import BASE_URL, HEADERS, MODEL, case, emit, show

MODES = {"json_schema": instructor.Mode.JSON_SCHEMA, "tools": instructor.Mode.TOOLS}


class User(BaseModel):  # as users write them: no `extra="forbid"`, so the schema has no additionalProperties
    name: str
    age: int


def main(mode: str) -> None:
    client = instructor.from_openai(OpenAI(base_url=BASE_URL, api_key="unused", default_headers=HEADERS,
                                           max_retries=0), mode=MODES[mode])
    sent, answers = [], []
    client.on("completion:kwargs", lambda *args, **kwargs: sent.append(kwargs))
    client.on("completion:response", answers.append)
    try:
        user = client.chat.completions.create(
            model=MODEL, response_model=User, temperature=0, max_tokens=120, max_retries=0,
            messages=[{"role": "user", "content": "John Smith is 31 years old."}])
    except Exception:
        show([answer.model_dump_json() for answer in answers])
        raise
    message = answers[-1].choices[0].message
    emit({"user": user.model_dump(),
          "sent": {key: sent[-1].get(key) for key in ("response_format", "tools", "tool_choice")},
          "tool_calls": len(message.tool_calls or [])})


if __name__ == "__main__":
    main(case())
