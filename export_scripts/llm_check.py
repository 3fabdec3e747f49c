"""Export-time checks of the LLM decoder through ONNX Runtime: greedy parity, quantisation quality, batch
invariance, speed.

`OrtDecoder` drives a decoder with the contract's signature (input_ids, attention_mask, position_ids,
past_key_values.{i}.key/value -> logits, present.{i}.key/value) the way the engine does, through the engine's
own OnnxDecoder and BatchCache: rows aligned at column 0, an empty past (past=0) for the prefill.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export_scripts.common import ExportError
from triton_models.llm.decoder import OnnxDecoder
from triton_models.llm.kv_cache import BatchCache
from triton_models.llm.prefill import aligned

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


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """HF's batch layout for `generate` (the reference): padding on the left."""
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, np.int64)
    mask = np.zeros((len(sequences), width), np.int64)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = seq
        mask[row, width - len(seq) :] = 1
    return ids, mask


class OrtDecoder:
    """One ONNX Runtime session of the exported decoder, run as the engine runs it."""

    def __init__(self, path: Path, threads: int = 2):
        session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        self.decoder = OnnxDecoder(path, session=session)

    def greedy(self, prompts: list[list[int]], max_new_tokens: int) -> tuple[np.ndarray, float]:
        """Greedy continuation of a batch of prompts, no early stop: [batch, max_new_tokens] token ids, and the
        seconds the decode steps took (the prefill excluded)."""
        decoder = self.decoder
        lengths = [len(p) for p in prompts]
        ids, mask, positions = aligned(prompts)
        logits, present = decoder.run(ids, mask, positions, decoder.empty_past(len(prompts)),
                                      last=np.asarray(lengths) - 1)
        cache = BatchCache(decoder.empty_past(1))
        cache.append(present, lengths)
        out = [logits.argmax(-1)]
        start = time.perf_counter()
        for _ in range(max_new_tokens - 1):
            input_ids, mask, positions = cache.step_feeds(out[-1])
            logits, present = decoder.run(input_ids, mask, positions, cache.past)
            cache.advance(present)
            out.append(logits.argmax(-1))
        return np.stack(out, axis=1), time.perf_counter() - start

    def logits(self, tokens: list[int]) -> np.ndarray:
        """Teacher-forced logits [seq, vocab] of one sequence in a single prefill."""
        ids = np.asarray([tokens], np.int64)
        positions = np.arange(len(tokens))[None]
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": positions,
                 "logits_index": positions}
        feeds.update(zip(self.decoder.past_names, self.decoder.empty_past(1)))
        return self.decoder.session.run(["logits"], feeds)[0][0]


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
            times[name].append(decoder.greedy([prompt], tokens + 1)[1])
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
    """Greedy token ids of the ONNX graph must equal transformers', alone and in a batch.

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
        got, _ = decoder.greedy(case, PARITY_TOKENS)
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
    answer = tokenizer.decode(until_eos(decoder.greedy(prompts[:1], PARITY_TOKENS)[0][0], eos))
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
    prompts = chat_prompts(tokenizer, QUALITY_PROMPTS)
    answers, _ = fp32.greedy(prompts, QUALITY_NEW_TOKENS)
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


BATCH_TOKENS = 24
BATCH_SYSTEM = (  # a long shared system prompt for half the prompts: mixed lengths, prefixes worth caching
    "You are a careful assistant for a team of engineers. Answer briefly and precisely, say when you are not "
    "sure, prefer plain words over jargon, and never invent facts, names, numbers or sources. "
)


class _Collect:
    """The engine's ResponseSink for the check: it only has to notice a failure."""

    error = None

    def is_cancelled(self) -> bool:
        return False

    def send(self, output, final) -> None:
        pass

    def fail(self, error) -> None:
        self.error = error


def check_batch_invariance(path: Path, model_dir: Path, tokenizer, threads: int) -> dict:
    """The served graph in the serving engine: greedy tokens of 8 prompts of mixed lengths run at once, and run
    at once again with their prefixes in the prefix cache, must equal each prompt's tokens alone on a cold
    engine, bit for bit, or the export fails (docs/llm-engine.md, "Batch invariance")."""
    from triton_models.llm.engine import Engine, EngineConfig
    from triton_models.llm.params import SamplingParams
    from triton_models.llm.tokenizer import TextTokenizer

    texts = [BATCH_SYSTEM * (i % 2 * (1 + i // 2)) + q for i, q in enumerate(QUALITY_PROMPTS + PARITY_PROMPTS[:2])]
    prompts = chat_prompts(tokenizer, texts)
    decoder, text_tokenizer = OrtDecoder(path, threads).decoder, TextTokenizer(model_dir)
    params = SamplingParams.from_dict({"temperature": 0, "ignore_eos": True, "max_tokens": BATCH_TOKENS})

    def generate(engine: Engine, batch: list[list[int]]) -> list[list[int]]:
        sinks = [_Collect() for _ in batch]
        requests = [engine.submit("", params, sink, prompt_ids=p) for sink, p in zip(sinks, batch)]
        while not all(r.closed for r in requests):
            engine.step()
        failed = [s.error for s in sinks if s.error is not None]
        if failed:
            raise ExportError(f"batch-invariance check: the engine failed a request: {failed[0]}")
        return [r.sequences[0].tokens[len(p):] for r, p in zip(requests, batch)]

    def engine() -> Engine:
        return Engine(decoder, text_tokenizer, EngineConfig(context_length=2048))

    solo = [generate(engine(), [p])[0] for p in prompts]
    shared = engine()
    for label in ("together", "together with cached prefixes"):
        got = generate(shared, prompts)
        for row, (want, have) in enumerate(zip(solo, got)):
            step = first_difference(want, have)
            if step is not None:
                raise ExportError(
                    f"batch invariance: prompt {row} ({len(prompts[row])} tokens) run {label} parts from its "
                    f"solo tokens at step {step}: {have} != {want}"
                )
    hits = shared.prefix_cache.hits
    log.info("batch invariance: %d prompts of %d-%d tokens, %d greedy tokens each, equal alone, together and "
             "together again (%d prefix-cache hits)", len(prompts), min(map(len, prompts)),
             max(map(len, prompts)), BATCH_TOKENS, hits)
    return {"batch_invariant_prompts": len(prompts), "batch_invariant_prefix_hits": hits}
