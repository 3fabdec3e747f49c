"""Export-time checks of the LLM decoder through ONNX Runtime: greedy parity, quantisation quality, speed.

`OrtDecoder` drives a decoder with the contract's signature (input_ids, attention_mask, position_ids,
past_key_values.{i}.key/value -> logits, present.{i}.key/value) the way the engine does: left-padded batches,
position ids from the attention mask, an empty past (past=0) for the prefill.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export_scripts.common import ExportError

log = logging.getLogger(__name__)

MIN_TOP1, MAX_KL = 0.95, 0.01  # quantised vs fp32, teacher-forced (llama.cpp's own Q4_1: 0.969 / 0.003)
PARITY_TOKENS = 24
TIE_LOGIT_GAP = 1e-3  # fp32 ORT vs torch logits: max difference 1e-4 measured on SmolLM2
PARITY_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Give me three tips for learning to cook.",
]
QUALITY_PROMPTS = PARITY_PROMPTS + [
    "Explain what a hash table is in two sentences.",
    "Translate 'good morning' into Spanish and German.",
    "Why is the sky blue?",
]
QUALITY_TEXT = [
    "The Triton Inference Server runs models from many frameworks behind one HTTP and gRPC interface. "
    "Each model lives in a folder of the model repository with a configuration file and numbered versions.",
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
]
QUALITY_NEW_TOKENS = 48


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # 2 shared cores
    return options


def position_ids(attention_mask: np.ndarray, seq: int) -> np.ndarray:
    """HF's rule: cumulative count of real tokens minus one, padding at 1; the last `seq` columns."""
    pos = np.cumsum(attention_mask, axis=-1) - 1
    pos[attention_mask == 0] = 1
    return pos[:, -seq:].astype(np.int64)


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, np.int64)
    mask = np.zeros((len(sequences), width), np.int64)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = seq
        mask[row, width - len(seq) :] = 1
    return ids, mask


class OrtDecoder:
    """One ONNX Runtime session of the exported decoder."""

    def __init__(self, path: Path, threads: int = 2):
        self.session = ort.InferenceSession(
            str(path), session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.past_names = [i.name for i in self.session.get_inputs() if i.name.startswith("past_key_values.")]
        self.output_names = [o.name for o in self.session.get_outputs()]
        kv_heads, head_dim = self.session.get_inputs()[3].shape[1], self.session.get_inputs()[3].shape[3]
        self.kv_shape = (int(kv_heads), int(head_dim))

    def empty_past(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, self.kv_shape[0], 0, self.kv_shape[1]), np.float32) for _ in self.past_names]

    def step(self, ids: np.ndarray, mask: np.ndarray, past: list[np.ndarray]):
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids(mask, ids.shape[1])}
        feeds.update(zip(self.past_names, past))
        logits, *present = self.session.run(self.output_names, feeds)
        return logits, present

    def greedy(self, prompts: list[list[int]], max_new_tokens: int, pad_id: int) -> np.ndarray:
        """Greedy continuation of left-padded prompts; [batch, max_new_tokens] token ids (no early stop)."""
        ids, mask = left_pad(prompts, pad_id)
        past = self.empty_past(len(prompts))
        out = []
        for _ in range(max_new_tokens):
            logits, past = self.step(ids, mask, past)
            ids = logits[:, -1].argmax(-1).astype(np.int64)[:, None]
            out.append(ids[:, 0])
            mask = np.concatenate([mask, np.ones_like(ids)], axis=1)
        return np.stack(out, axis=1)

    def logits(self, tokens: list[int]) -> np.ndarray:
        """Teacher-forced logits [seq, vocab] of one sequence in a single prefill."""
        ids = np.asarray([tokens], np.int64)
        logits, _ = self.step(ids, np.ones_like(ids), self.empty_past(1))
        return logits[0]


def first_difference(want: list[int], have: list[int]) -> int | None:
    """First step where `have` departs from `want` (`have` may run on past an end-of-sequence)."""
    for step, token in enumerate(want):
        if step >= len(have) or have[step] != token:
            return step
    return None


def until_eos(tokens, eos_ids: set[int]) -> list[int]:
    """Tokens up to and including the first end-of-sequence token."""
    out = []
    for t in tokens:
        out.append(int(t))
        if int(t) in eos_ids:
            break
    return out


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def agreement(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """Top-1 agreement and mean KL(reference || candidate) over positions of [positions, vocab] logits."""
    ref, cand = log_softmax(reference), log_softmax(candidate)
    top1 = float(np.mean(ref.argmax(-1) == cand.argmax(-1)))
    kl = float(np.mean(np.sum(np.exp(ref) * (ref - cand), axis=-1)))
    return top1, kl


def decode_speed(decoders: dict[str, OrtDecoder], prompt: list[int], tokens: int, repeats: int = 3) -> dict:
    """Greedy decode tokens/s at batch 1 (prefill excluded), runs interleaved, median of `repeats`."""
    times: dict[str, list[float]] = {name: [] for name in decoders}
    for _ in range(repeats):
        for name, decoder in decoders.items():
            ids = np.asarray([prompt], np.int64)
            mask = np.ones_like(ids)
            logits, past = decoder.step(ids, mask, decoder.empty_past(1))
            start = time.perf_counter()
            for _ in range(tokens):
                ids = logits[:, -1:].argmax(-1).astype(np.int64)
                mask = np.concatenate([mask, np.ones_like(ids)], axis=1)
                logits, past = decoder.step(ids, mask, past)
            times[name].append(time.perf_counter() - start)
    return {name: round(tokens / statistics.median(t), 1) for name, t in times.items()}


def chat_prompts(tokenizer, texts: list[str]) -> list[list[int]]:
    rendered = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True
        )
        for t in texts
    ]
    return [tokenizer(r, add_special_tokens=False)["input_ids"] for r in rendered]


def check_parity(model, tokenizer, decoder: OrtDecoder) -> dict:
    """Greedy token ids of the ONNX graph must equal transformers', alone and in a left-padded batch.

    The one allowance: where the tokens part at a tie in transformers' own logits (the two tokens within
    `TIE_LOGIT_GAP`), float summation order on another CPU may pick either, so that row is compared up to
    there and the tie is logged. Any other difference fails the export.
    """
    import torch

    prompts = chat_prompts(tokenizer, PARITY_PROMPTS)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = {tokenizer.eos_token_id}
    cases = [[p] for p in prompts] + [prompts]
    ties = 0
    for case in cases:
        ids, mask = left_pad(case, pad)
        with torch.no_grad():
            out = model.generate(
                torch.from_numpy(ids),
                attention_mask=torch.from_numpy(mask),
                do_sample=False,
                max_new_tokens=PARITY_TOKENS,
                pad_token_id=pad,
                output_logits=True,
                return_dict_in_generate=True,
            )
        expected = out.sequences[:, ids.shape[1] :].numpy()
        logits = torch.stack(out.logits, dim=1).numpy()  # [batch, step, vocab]
        got = decoder.greedy(case, PARITY_TOKENS, pad)
        for row, (want, have) in enumerate(zip(expected, got)):
            want, have = until_eos(want, eos), until_eos(have, eos)
            step = first_difference(want, have)
            if step is None:
                continue
            gap = abs(float(logits[row, step, want[step]] - logits[row, step, have[step]]))
            if gap > TIE_LOGIT_GAP:
                raise ExportError(
                    f"fp32 ONNX greedy tokens differ from transformers (batch {len(case)}, row {row}, "
                    f"step {step}, logit gap {gap:.2e}): {have} != {want}"
                )
            ties += 1
            log.warning(
                "parity: batch %d row %d parts at a tie (step %d, gap %.1e)", len(case), row, step, gap
            )
    answer = tokenizer.decode(until_eos(decoder.greedy(prompts[:1], PARITY_TOKENS, pad)[0], eos))
    log.info(
        "fp32 parity: %d cases equal transformers' greedy tokens (%d rows parted at a tie); %r -> %r",
        len(cases),
        ties,
        PARITY_PROMPTS[0],
        answer,
    )
    return {"parity_cases": len(cases), "parity_ties": ties, "sample_answer": answer}


def check_quality(tokenizer, fp32: OrtDecoder, quant: OrtDecoder) -> dict:
    """Teacher-forced top-1 agreement and mean KL of the quantised graph against fp32.

    Sequences: chat prompts followed by fp32's own greedy answer, and fixed plain text.
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompts = chat_prompts(tokenizer, QUALITY_PROMPTS)
    answers = fp32.greedy(prompts, QUALITY_NEW_TOKENS, pad)
    eos = {tokenizer.eos_token_id}
    sequences = [p + until_eos(a, eos) for p, a in zip(prompts, answers)]
    sequences += [tokenizer(t, add_special_tokens=False)["input_ids"] for t in QUALITY_TEXT]
    reference = np.concatenate([fp32.logits(s)[:-1] for s in sequences])
    candidate = np.concatenate([quant.logits(s)[:-1] for s in sequences])
    top1, kl = agreement(reference, candidate)
    result = {"top1_agreement": round(top1, 4), "mean_kl": round(kl, 5), "positions": len(reference)}
    log.info(
        "quantised vs fp32, teacher-forced over %d positions: top-1 agreement %.4f (>= %.2f), mean KL %.5f "
        "(<= %.2f)",
        len(reference),
        top1,
        MIN_TOP1,
        kl,
        MAX_KL,
    )
    if top1 < MIN_TOP1 or kl > MAX_KL:
        raise ExportError(
            f"quantised graph too far from fp32: top-1 {top1:.4f} (min {MIN_TOP1}), "
            f"KL {kl:.5f} (max {MAX_KL})"
        )
    return result
