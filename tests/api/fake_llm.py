"""A fake of the chat-LLM Triton model's contract (triton_models/llm/model.py), for API tests without Triton.

Words are tokens. Choice j of a prompt generates " w<k>" words from a hash of the prompt (and seed, when
not greedy), ends with "stop" after `eos_after` words unless `ignore_eos`, and with "length" at max_tokens.
Errors surface as TritonBackend raises them (frontend.errors.from_triton), before or after the first response.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math

import numpy as np

from frontend.errors import from_triton
from triton_models import contract

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}{{ eos_token }}"
    "{% if message['role'] == 'user' and 'forbidden' in message['content'] %}"
    "{{ raise_exception('That word is not allowed') }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
PARAMETERS = {"openai_task": "chat", "context_length": "64", "chat_template": CHAT_TEMPLATE,
              "bos_token": "<s>", "eos_token": "</s>"}


class FakeLLM:
    """Knobs: eos_after, delay_s (per response), fail_after (responses before a mid-stream error), overloaded,
    script (the text pieces every choice answers, one per response, instead of generated words)."""

    def __init__(self, context_length: int = 64):
        self.context_length = context_length
        self.eos_after = 5
        self.delay_s = 0.0
        self.fail_after: int | None = None
        self.overloaded = False
        self.script: list[str] | None = None
        self.closed_early = 0  # streams the frontend closed before the final response (cancellations)
        self.prompts: list[str] = []
        self.params: list[dict] = []

    @staticmethod
    def words(prompt: str, choice: int, seed: int | None, greedy: bool, count: int) -> list[str]:
        key = f"{prompt}|{choice}|{'' if greedy else seed}"
        base = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")
        return [f" w{(base + i * 7919) % 1000}" for i in range(count)]

    async def stream(self, inputs: dict):
        prompt = inputs["text_input"][0].decode()
        params = json.loads(inputs["sampling_parameters"][0]) if "sampling_parameters" in inputs else {}
        self.prompts.append(prompt)
        self.params.append(params)
        stream = bool(inputs.get("stream", [False])[0])
        want_logprobs = "return_logprobs" in inputs
        n, max_tokens = params.get("n", 1), params.get("max_tokens")
        prompt_tokens = len(prompt.split())
        if self.overloaded:
            raise from_triton("StatusCode.UNAVAILABLE", contract.ModelError(
                contract.OVERLOADED, "1 requests are already waiting (max_queue); retry later").encode())
        if prompt_tokens + (max_tokens or 1) > self.context_length:
            raise from_triton("StatusCode.INVALID_ARGUMENT", contract.ModelError(
                contract.CONTEXT_LENGTH_EXCEEDED, f"this model's maximum context length is {self.context_length} "
                f"tokens, but {prompt_tokens + (max_tokens or 0)} were requested").encode())
        limit = max_tokens or self.context_length - prompt_tokens
        greedy = params.get("temperature", 1.0) == 0
        choices = []
        for j in range(n):
            words = list(self.script) if self.script else self.words(prompt, j, params.get("seed"), greedy, limit)
            reason = "length"
            if not params.get("ignore_eos") and self.eos_after < limit:
                words, reason = words[:self.eos_after], "stop"
            for stop in params.get("stop", []) if isinstance(params.get("stop"), list) else [params.get("stop")]:
                text = "".join(words)
                if stop and stop in text:  # cut at the stop string, as the engine does (not emitted)
                    cut, kept, count = text.index(stop), [], 0
                    for w in words:
                        if count + len(w) > cut:
                            break
                        kept.append(w)
                        count += len(w)
                    words, reason = kept, "stop"
            choices.append((words, reason))
        steps = max(len(w) for w, _ in choices) if stream else 1
        finished = False
        try:
            for step in range(steps):
                if self.fail_after is not None and step >= self.fail_after:
                    raise from_triton("StatusCode.INTERNAL", contract.ModelError(
                        contract.GENERATION_FAILED, "generation failed for this request; please retry").encode())
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                final = step == steps - 1
                parts = [w[step:step + 1] if stream else w for w, _ in choices]
                out = {
                    "text_output": np.array(["".join(p).encode() for p in parts], dtype=np.object_),
                    "num_input_tokens": np.array([prompt_tokens], np.uint32),
                    "num_output_tokens": np.array([len(p) for p in parts], np.uint32),
                }
                if final:
                    out["finish_reason"] = np.array([r.encode() for _, r in choices], dtype=np.object_)
                if want_logprobs:
                    out["logprobs"] = np.array([json.dumps([_entry(w, params.get("logprobs", 0)) for w in p]).encode()
                                                for p in parts], dtype=np.object_)
                finished = final
                yield out
        finally:
            if not finished:
                self.closed_early += 1


def _entry(word: str, k: int) -> dict:
    """The vLLM backend's logprobs entry: the top k (ranked) plus the sampled token, rank 2 when k >= 2."""
    top = [(f"{word}x{r}" if r != 2 else word, math.log(0.5 / r)) for r in range(1, k + 1)]
    entry = {str(1000 + r): {"logprob": lp, "rank": r + 1, "decoded_token": t} for r, (t, lp) in enumerate(top)}
    if k < 2:
        entry["1"] = {"logprob": math.log(0.25), "rank": 2, "decoded_token": word}
    return entry


def sse_events(body: str) -> list:
    """The `data:` payloads of an SSE body, JSON-decoded, `[DONE]` kept as the string; checks the framing."""
    assert body.endswith("\n\n"), body[-50:]
    events = []
    for frame in body.split("\n\n")[:-1]:
        assert frame.startswith("data: "), frame
        payload = frame.removeprefix("data: ")
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    assert events and events[-1] == "[DONE]" and "[DONE]" not in events[:-1]
    return events[:-1]
