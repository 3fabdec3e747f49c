"""A chat completion's stream as the Responses API's events, in OpenAI's order and numbered:
`response.created`, `response.in_progress`; per output item `response.output_item.added`, then for a message
`response.content_part.added`, `response.output_text.delta`..., `response.output_text.done`,
`response.content_part.done`, and for a call `response.function_call_arguments.delta`...,
`response.function_call_arguments.done`; `response.output_item.done`; last `response.completed` (or
`response.incomplete` when cut by max_output_tokens). A failure mid-stream is an `error` event, then
`response.failed`."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import AsyncIterator

from frontend.errors import APIError
from frontend.services.response_items import message_item, new_id, renamed, usage

log = logging.getLogger(__name__)


class Events:
    def __init__(self, head: dict):
        self.response = copy.deepcopy(head)  # grows as the stream goes: the object of the last event
        self.sequence = 0
        self.open: dict | None = None  # the output item being written

    def _event(self, kind: str, **fields) -> dict:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def _snapshot(self) -> dict:
        return copy.deepcopy(self.response)

    async def of(self, chunks: AsyncIterator[dict]) -> AsyncIterator[dict]:
        yield self._event("response.created", response=self._snapshot())
        yield self._event("response.in_progress", response=self._snapshot())
        finish = None
        try:
            async for chunk in chunks:
                self.response["model"] = chunk["model"]
                if chunk.get("usage"):
                    self.response["usage"] = usage(chunk["usage"])
                for choice in chunk["choices"]:
                    delta = choice["delta"]
                    if delta.get("content"):
                        for event in self._text(delta["content"]):
                            yield event
                    for part in delta.get("tool_calls") or ():
                        for event in self._call(part):
                            yield event
                    finish = choice.get("finish_reason") or finish
        except Exception as exc:  # noqa: BLE001 - the status line is gone: the client hears it as events
            error = renamed(exc) if isinstance(exc, APIError) else APIError("internal server error")
            if not isinstance(exc, APIError):
                log.exception("responses stream failed")
            yield self._event("error", code=error.code, message=error.message, param=error.param)
            self.response.update(status="failed", error={"code": error.code or "server_error",
                                                         "message": error.message})
            yield self._event("response.failed", response=self._snapshot())
            return
        status = "incomplete" if finish == "length" else "completed"
        for event in self._close(status):
            yield event
        self.response.update(status=status, completed_at=int(time.time()),
                             incomplete_details={"reason": "max_output_tokens"} if status == "incomplete" else None)
        yield self._event(f"response.{status}", response=self._snapshot())

    def _add(self, item: dict) -> list[dict]:
        self.response["output"].append(item)
        self.open = item
        return [self._event("response.output_item.added", output_index=len(self.response["output"]) - 1,
                            item=copy.deepcopy(item))]

    def _where(self) -> dict:
        return {"item_id": self.open["id"], "output_index": len(self.response["output"]) - 1}

    def _text(self, text: str) -> list[dict]:
        events = []
        if self.open is None or self.open["type"] != "message":
            events += self._close("completed")
            item = message_item("", "in_progress")
            part, item["content"] = item["content"][0], []
            events += self._add(item)
            item["content"].append(part)
            events.append(self._event("response.content_part.added", **self._where(), content_index=0,
                                      part=copy.deepcopy(part)))
        self.open["content"][0]["text"] += text
        events.append(self._event("response.output_text.delta", **self._where(), content_index=0, delta=text,
                                  logprobs=[]))
        return events

    def _call(self, part: dict) -> list[dict]:
        events = []
        function = part.get("function") or {}
        if part.get("id"):  # a new call: its id and name come first (frontend/services/chat.py tool_deltas)
            events += self._close("completed")
            events += self._add({"id": new_id("fc"), "type": "function_call", "call_id": part["id"],
                                 "name": function.get("name", ""), "arguments": "", "status": "in_progress"})
        if function.get("arguments"):
            self.open["arguments"] += function["arguments"]
            events.append(self._event("response.function_call_arguments.delta", **self._where(),
                                      delta=function["arguments"]))
        return events

    def _close(self, status: str) -> list[dict]:
        """The events that end the open item."""
        item, events = self.open, []
        if item is None:
            return events
        if item["type"] == "message":
            part = item["content"][0]
            events.append(self._event("response.output_text.done", **self._where(), content_index=0,
                                      text=part["text"], logprobs=[]))
            events.append(self._event("response.content_part.done", **self._where(), content_index=0,
                                      part=copy.deepcopy(part)))
        else:
            status = "completed"  # a call that was parsed whole
            events.append(self._event("response.function_call_arguments.done", **self._where(),
                                      name=item["name"], arguments=item["arguments"]))
        item["status"] = status
        events.append(self._event("response.output_item.done", output_index=len(self.response["output"]) - 1,
                                  item=copy.deepcopy(item)))
        self.open = None
        return events
