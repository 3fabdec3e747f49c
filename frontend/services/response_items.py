"""Responses API items <-> chat messages and output.

Input items are normalised (ids, content as part lists) before they are stored, so a stored conversation reads
back as OpenAI's `input_items` list and converts to chat messages the same way on every later turn. Each check
names the item by its index (`input[2].content[0].image_url`).
"""

from __future__ import annotations

import uuid

from frontend.errors import APIError, InvalidRequest

# Chat's names for the fields a Responses request gave, in errors raised by the chat path.
PARAMS = {"messages": "input", "max_completion_tokens": "max_output_tokens", "response_format": "text.format"}


def renamed(error: APIError) -> APIError:
    """An error of the chat path, naming the Responses field the caller gave (a message's index differs from
    its item's: `input` alone)."""
    if error.param is not None:
        base = error.param.split(".")[0].split("[")[0]
        if base in PARAMS:
            error.param = PARAMS[base]
    return error


MESSAGE_ROLES = ("user", "system", "developer", "assistant")
TEXT_PARTS = ("input_text", "output_text", "text", "refusal")


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def normalise(items: str | list[dict]) -> list[dict]:
    """The request's input as complete items with ids: a string is one user message."""
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    return [_item(item, f"input[{i}]") for i, item in enumerate(items)]


def _item(item: dict, where: str) -> dict:
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in MESSAGE_ROLES:
            raise InvalidRequest(f"{where}.role must be one of {', '.join(MESSAGE_ROLES)}", param=f"{where}.role")
        content = item.get("content")
        if isinstance(content, str):
            content = [{"type": "output_text" if role == "assistant" else "input_text", "text": content}]
        if not isinstance(content, list):
            raise InvalidRequest(f"{where}.content must be a string or a list of parts", param=f"{where}.content")
        parts = [_part(part, f"{where}.content[{j}]") for j, part in enumerate(content)]
        return {"id": item.get("id") or new_id("msg"), "type": "message", "role": role, "content": parts,
                "status": "completed"}
    if kind == "function_call":
        for field in ("call_id", "name", "arguments"):
            if not isinstance(item.get(field), str):
                raise InvalidRequest(f"{where}.{field} must be a string", param=f"{where}.{field}")
        return {"id": item.get("id") or new_id("fc"), "type": "function_call", "call_id": item["call_id"],
                "name": item["name"], "arguments": item["arguments"], "status": "completed"}
    if kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise InvalidRequest(f"{where}.call_id must be a string", param=f"{where}.call_id")
        output = item.get("output")
        if isinstance(output, list):
            output = "".join(_part(p, f"{where}.output[{j}]").get("text", "") for j, p in enumerate(output))
        if not isinstance(output, str):
            raise InvalidRequest(f"{where}.output must be a string", param=f"{where}.output")
        return {"id": item.get("id") or new_id("fco"), "type": "function_call_output", "call_id": item["call_id"],
                "output": output, "status": "completed"}
    raise InvalidRequest(f"input items of type `{kind}` are not supported: give messages, function_call and "
                         "function_call_output items", param=f"{where}.type")


def _part(part: dict, where: str) -> dict:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in TEXT_PARTS:
        text = part.get("text", part.get("refusal"))
        if not isinstance(text, str):
            raise InvalidRequest(f"{where}.text must be a string", param=f"{where}.text")
        return {**part, "text": text}
    if kind == "input_image":
        if not isinstance(part.get("image_url"), str):
            raise InvalidRequest("images are taken as `image_url` (a URL or a data: URL); file ids need the Files "
                                 "API, which this server does not have", param=f"{where}.image_url")
        return {"type": "input_image", "image_url": part["image_url"], "detail": part.get("detail") or "auto"}
    raise InvalidRequest(f"content parts of type `{kind}` are not supported: give input_text and input_image",
                         param=f"{where}.type")


def chat_messages(instructions: str | None, items: list[dict]) -> list[dict]:
    """Chat messages of normalised items: a function_call joins the assistant turn before it, as chat writes
    parallel calls; a function_call_output is a tool message."""
    messages = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        if item["type"] == "message":
            parts = [{"type": "image_url", "image_url": {"url": p["image_url"], "detail": p["detail"]}}
                     if p["type"] == "input_image" else {"type": "text", "text": p["text"]} for p in item["content"]]
            if item["role"] == "assistant" or all(p["type"] == "text" for p in parts):
                messages.append({"role": item["role"], "content": "".join(p.get("text", "") for p in parts)})
            else:
                messages.append({"role": item["role"], "content": parts})
        elif item["type"] == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
    return messages


def message_item(text: str, status: str, item_id: str | None = None) -> dict:
    return {"id": item_id or new_id("msg"), "type": "message", "role": "assistant", "status": status,
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def call_item(call: dict, status: str = "completed", item_id: str | None = None) -> dict:
    return {"id": item_id or new_id("fc"), "type": "function_call", "call_id": call["id"],
            "name": call["function"]["name"], "arguments": call["function"]["arguments"], "status": status}


def output_items(completion: dict) -> tuple[list[dict], str]:
    """The output items of a chat completion and the response's status."""
    choice = completion["choices"][0]
    status = "incomplete" if choice["finish_reason"] == "length" else "completed"
    message = choice["message"]
    items = [message_item(message["content"], status)] if message.get("content") else []
    items += [call_item(call) for call in message.get("tool_calls") or ()]
    return items, status


def usage(chat_usage: dict | None) -> dict | None:
    if chat_usage is None:
        return None
    cached = (chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return {"input_tokens": chat_usage["prompt_tokens"], "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": chat_usage["completion_tokens"], "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": chat_usage["total_tokens"]}
