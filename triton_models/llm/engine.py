"""The engine: one thread owns the ONNX session and runs continuous-batching steps.

Each iteration: drop cancelled requests, admit waiting sequences (prefill them, grouped by length, and
merge their KV into the batch), then decode every running sequence in one batched ONNX Runtime run.
Finished sequences leave the batch at once. `submit` (called from Triton's threads) only validates and
queues; responses go out from the engine thread through each request's ResponseSink.

Faults stay with their request: sampling, penalties, stop strings and detokenisation run per sequence, and
one that raises fails its own request (GENERATION_FAILED) while the step goes on for the others. Only a
failing decoder run fails more: the sequences that were in that run, never the waiting queue.
"""

from __future__ import annotations

import functools
import logging
import threading
import time

import numpy as np

from triton_models.contract import (
    CONTEXT_LENGTH_EXCEEDED,
    GENERATION_FAILED,
    INVALID_REQUEST,
    INVALID_TOKEN_IDS,
    UNAVAILABLE,
    ModelError,
)
from triton_models.llm.config import EngineConfig, EngineStats
from triton_models.llm.decoder import OnnxDecoder
from triton_models.llm.grammar import Grammars, Unfollowable, field
from triton_models.llm.kv_cache import BatchCache, row_kv
from triton_models.llm.metrics import EngineMetrics, EngineState
from triton_models.llm.params import InvalidRequest, SamplingParams
from triton_models.llm.prefill import Occupancy, PrefillJob, aligned, length_groups
from triton_models.llm.prefix_cache import PrefixCache
from triton_models.llm.scheduler import Scheduler
from triton_models.llm.sequence import ABORT, PromptEmbeds, Request, ResponseSink, Sequence
from triton_models.llm.tokenizer import TextTokenizer

__all__ = ["Engine", "EngineConfig"]

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.5
STATS_EVERY_S = 60.0  # the engine thread logs its throughput this often while it has work
STOP_TIMEOUT_S = 5.0  # how long `stop` waits for the step in progress (one decode step takes milliseconds)

# What a client hears when its sequence failed inside the engine; the cause goes to the log, not to the client.
FAILED = ModelError(GENERATION_FAILED, "generation failed for this request; please retry")
SHUTTING_DOWN = ModelError(UNAVAILABLE, "the model is shutting down")


class Engine:
    """Continuous-batching generation over an OnnxDecoder. Start with `start()`, end with `stop()`."""

    def __init__(self, decoder: OnnxDecoder, tokenizer: TextTokenizer, config: EngineConfig,
                 metrics: EngineMetrics | None = None):
        """`metrics` records what the engine does and publishes it (Triton's metrics endpoint, in a model)."""
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.config = config
        self.scheduler = Scheduler(config.limits)
        self.cache = BatchCache(decoder.empty_past(1))
        self.running: list[Sequence] = []  # row order of self.cache
        self.prefilling: list[PrefillJob] = []  # long prompts, a chunk per iteration, oldest first
        self.metrics = metrics or EngineMetrics()
        self.prefix_cache = PrefixCache(config.prefix_cache_tokens, on_hit=self.metrics.prefix_hit)
        self.grammars = Grammars(tokenizer)
        self.stats = EngineStats()
        self._admitted: list[Sequence] = []  # taken from the queue this step, not yet running or prefilling
        self._lock = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- called from Triton's threads ---------------------------------------------------------------

    def submit(
        self, prompt: str, params: SamplingParams, sink: ResponseSink, *, stream: bool = False,
        prepend_prompt: bool = False, want_logprobs: bool = False, prompt_ids: list[int] | None = None,
        prompt_embeds: PromptEmbeds | None = None,
    ) -> Request:
        """Validate and queue a request. Raises a ModelError: InvalidRequest, CONTEXT_LENGTH_EXCEEDED, Overloaded
        when the queue is full, UNAVAILABLE when stopping.

        `prompt_ids` (already tokenized) skips tokenizing `prompt`; `prompt_embeds` replaces the token
        embeddings at some prompt positions (image features at image tokens; embedding decoders only).
        """
        if prompt_ids is None:
            prompt_ids = self.tokenizer.encode(prompt)
        max_new = self._max_new(len(prompt_ids), params)
        vocab = self.tokenizer.tokenizer.get_vocab_size()
        outside = [t for t, _ in params.logit_bias if t >= vocab]
        if outside:
            raise InvalidRequest(f"logit_bias: token id {outside[0]} is outside the vocabulary (0..{vocab - 1})",
                                 "logit_bias", INVALID_TOKEN_IDS)
        request = Request(prompt, prompt_ids, params, stream, sink, prepend_prompt, want_logprobs,
                          prompt_embeds=prompt_embeds)
        grammar = self.grammars.compile(*params.structured) if params.structured else None
        request.sequences = [
            Sequence(request, i, self.tokenizer, max_new,
                     grammar and self.grammars.constraint(grammar, field(params.structured[0], params.structured[2])))
            for i in range(params.n)
        ]
        with self._lock:
            if self._stopping:
                raise ModelError(SHUTTING_DOWN.code, SHUTTING_DOWN.message)
            self.scheduler.enqueue(request.sequences)
            self._lock.notify()
        return request

    def _max_new(self, prompt_tokens: int, params: SamplingParams) -> int:
        context = self.config.context_length
        if prompt_tokens == 0:
            raise InvalidRequest("the prompt is empty")
        requested = params.max_tokens or 1  # at least one token must fit after the prompt
        if prompt_tokens + requested > context:
            asked = f", {params.max_tokens} for the completion" if params.max_tokens else ""
            raise ModelError(CONTEXT_LENGTH_EXCEEDED, (
                f"This model's maximum context length is {context} tokens, "
                f"but {prompt_tokens + (params.max_tokens or 0)} were requested "
                f"({prompt_tokens} in the prompt{asked})"
            ))
        if not self.scheduler.fits_alone(prompt_tokens):
            raise ModelError(CONTEXT_LENGTH_EXCEEDED, (
                f"the prompt's {prompt_tokens} tokens exceed this deployment's KV budget of "
                f"{self.config.limits.max_kv_tokens} tokens"
            ))
        return params.max_tokens or context - prompt_tokens

    def start(self) -> Engine:
        self._thread = threading.Thread(target=self._loop, name="llm-engine", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop the engine thread (bounded wait); every unfinished request fails with UNAVAILABLE."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread is None:  # never started: nothing else touches the requests
            self._fail_all(SHUTTING_DOWN, include_waiting=True)
            return
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("the engine thread did not stop within %.1f s; it fails its requests when its step ends",
                        timeout_s)

    # -- the engine thread --------------------------------------------------------------------------

    def _loop(self) -> None:
        self._report()  # the capacity gauge, from the start
        while True:
            with self._lock:
                while not (self._stopping or self.running or self.prefilling or self.scheduler.waiting):
                    self._lock.wait(IDLE_WAIT_S)
                if self._stopping:
                    break
            try:
                self.step()
            except Exception:  # a bug outside the per-sequence guards: fail what was in flight, keep the model
                log.exception("engine step failed")
                self._fail_all(FAILED)
            self._report()
            if time.monotonic() - self.stats.since >= STATS_EVERY_S:
                self._log_stats()
        self._fail_all(SHUTTING_DOWN, include_waiting=True)
        self._report()

    def step(self) -> None:
        """One iteration: cancellations, admissions (prefill), one decode step for the running batch."""
        self._reap_cancelled()
        chunk = self.config.prefill_chunk
        with self._lock:
            pending = [job.seq.cache_tokens for job in self.prefilling]
            admitted = self.scheduler.admit(Occupancy(self.cache, pending))
        self._admitted = admitted
        now = time.monotonic()
        for seq in admitted:
            if seq.request.admitted is None:  # its first admission (a preempted sequence comes back later)
                seq.request.admitted = now
                self.metrics.queued(now - seq.request.created)
        short = []
        for seq in admitted:
            job = self._cached_prefix(seq)
            self.stats.reused += job.done if job is not None else 0
            if job is not None and seq.cache_tokens - job.done == 1:
                # A known prompt: it joins the batch as if decoding; this step's decode runs its last token.
                self.cache.append(job.past, [job.done])
                self.running.append(seq)
            elif job is not None and seq.cache_tokens - job.done <= chunk:
                self._advance(job)  # the rest of a known prompt: one short run now
            elif job is not None or seq.cache_tokens > chunk:
                self.prefilling.append(job or PrefillJob(seq))
            else:
                short.append(seq)
        if short:
            self._prefill(short)
        self._admitted = []
        self._retire()  # a prefill's first token may have been its last
        if self.prefilling:
            self._prefill_chunk()
            self._retire()
        if self.running:
            self._preempt_to_fit()
        if self.running:
            self._decode()
            self._retire()

    def _prefill(self, sequences: list[Sequence]) -> None:
        for group in length_groups(sequences, self.config.prefill_chunk):
            if self._prefill_group(group, fail=len(group) == 1):
                continue
            # One sequence (its image features, say) broke the shared run: each goes alone, so only it fails.
            for seq in group:
                self._prefill_group([seq], fail=True)

    def _prefill_group(self, group: list[Sequence], fail: bool) -> bool:
        """Prefill these sequences together and join them to the batch; False if the run failed (their
        requests failed too when `fail`)."""
        lengths = [s.cache_tokens for s in group]
        ids, mask, positions = aligned([s.tokens for s in group])
        try:
            embeds = self._prompt_embeds(group, ids, 0)
            logits, present = self.decoder.run(ids, mask, positions, self.decoder.empty_past(len(group)),
                                               inputs_embeds=embeds, last=np.asarray(lengths) - 1)
        except Exception:  # the group never joins the batch
            log.exception("prefill of %d sequence(s) failed", len(group))
            if fail:
                self._fail_requests(group, FAILED)
            return False
        self.stats.prefilled += sum(lengths)
        self.cache.append(present, lengths)
        self.running.extend(group)
        for row, (seq, length) in enumerate(zip(group, lengths)):
            self._remember(seq, functools.partial(row_kv, present, row, length))
        self._sample(group, logits)
        return True

    def _cached_prefix(self, seq: Sequence) -> PrefillJob | None:
        """A prefill job starting after the longest cached prefix of the sequence's tokens, if any."""
        if seq.request.prompt_embeds is not None:  # image features hide behind placeholder token ids
            return None
        hit = self.prefix_cache.lookup(seq.tokens, seq.request.params.cache_salt)
        return PrefillJob(seq, done=hit[0], past=hit[1]) if hit is not None else None

    def _remember(self, seq: Sequence, kv, length: int | None = None) -> None:
        """Offer the KV of a sequence's first `length` tokens (default: all; `kv` a callable, so copies happen
        only when kept) to the prefix cache, under the request's cache salt."""
        if seq.request.prompt_embeds is None:
            self.prefix_cache.insert(seq.tokens[:length], kv, seq.request.params.cache_salt)

    def _prefill_chunk(self) -> None:
        """The next chunk of the oldest long prompt; once complete it joins the batch."""
        self.prefilling = [job for job in self.prefilling if not job.seq.finished]  # cancelled meanwhile
        if not self.prefilling:
            return
        if self._advance(self.prefilling[0]):
            self.prefilling.pop(0)

    def _advance(self, job: PrefillJob) -> bool:
        """Prefill the job's next chunk; once the prompt is complete it joins the batch (True)."""
        tokens = job.seq.tokens
        end = min(job.done + self.config.prefill_chunk, len(tokens))
        self.stats.prefilled += end - job.done
        ids = np.asarray([tokens[job.done:end]], np.int64)
        mask = np.ones((1, end), np.int64)
        positions = np.arange(job.done, end, dtype=np.int64)[None]
        try:
            embeds = self._prompt_embeds([job.seq], ids, job.done)
            logits, job.past = self.decoder.run(ids, mask, positions, job.past or self.decoder.empty_past(1),
                                                inputs_embeds=embeds)
        except Exception:  # this prompt alone fails; the job is done with
            log.exception("request %d: prefill failed", job.seq.request.id)
            self._fail_requests([job.seq], FAILED)
            return True
        job.done = end
        if end < len(tokens):
            return False
        self.cache.append(job.past, [end])
        self.running.append(job.seq)
        self._remember(job.seq, lambda: job.past)
        self._sample([job.seq], logits)
        return True

    def _prompt_embeds(self, group: list[Sequence], ids: np.ndarray, start: int) -> np.ndarray | None:
        """A prefill's input embeddings when a prompt brings its own (None: the decoder looks tokens up).

        Row i holds tokens `start...` of group[i] from column 0 on.
        """
        if all(s.request.prompt_embeds is None for s in group):
            return None
        embeds = self.decoder.embed(ids)
        for row, seq in enumerate(group):
            if seq.request.prompt_embeds is not None:
                seq.request.prompt_embeds.place(embeds[row], start, start + ids.shape[1])
        return embeds

    def _decode(self) -> None:
        tokens = np.fromiter((s.tokens[-1] for s in self.running), np.int64, len(self.running))
        input_ids, mask, positions = self.cache.step_feeds(tokens)
        try:
            logits, present = self.decoder.run(input_ids, mask, positions, self.cache.past)
        except Exception:  # the shared run failed: every sequence in it fails (their rows leave at the retire)
            log.exception("decode step of %d sequence(s) failed", len(self.running))
            self._fail_requests(self.running, FAILED)
            return
        self.cache.advance(present)
        self._sample(self.running, logits)
        self.metrics.decoded(time.monotonic())

    def _sample(self, sequences: list[Sequence], logits: np.ndarray) -> None:
        context = self.config.context_length
        for seq, row in zip(sequences, logits):
            if seq.finished:  # cancelled or failed since it joined; its row leaves at the next retire
                continue
            self.stats.generated += 1
            try:
                if seq.constraint is not None:
                    seq.constraint.mask(row)
                token, info = seq.sampler.sample(row)
                seq.accept(token, info)
                if seq.generated == 1 and seq.request.first_token is None:
                    seq.request.first_token = time.monotonic()
                    self.metrics.first_token(seq.request.first_token - seq.request.created)
                if not seq.finished and seq.cache_tokens >= context:
                    seq.finish("length")
            except Unfollowable as exc:  # the client's constraint, not a fault of ours: a 400 naming its field
                log.warning("request %d: %s", seq.request.id, exc)
                self._fail_requests([seq], ModelError(
                    INVALID_REQUEST, "the constraint cannot be followed with this model's tokens (its grammar refused "
                    "a token it had allowed); simplify it, e.g. avoid characters outside the Basic Multilingual Plane",
                    exc.param))
            except Exception:  # this sequence's sampling, stop strings or text: its request fails alone
                log.exception("request %d: sequence %d failed; the batch goes on", seq.request.id, seq.index)
                self._fail_requests([seq], FAILED)
        for request in {id(s.request): s.request for s in sequences}.values():
            self._emit(request)

    def _emit(self, request: Request) -> None:
        if request.closed:
            return
        final = request.finished
        if final or request.stream:
            try:
                output = request.take_output(final)
            except Exception:  # detokenising what is left (final flush) failed: this request alone
                log.exception("request %d: building its response failed", request.id)
                self._fail_requests(request.sequences, FAILED)
                return
            self._deliver(request, final, request.sink.send, output, final)

    def _deliver(self, request: Request, final: bool, send, *args) -> None:
        """Call the sink; a failing sink (client gone, model unloading) ends its request, not the engine."""
        request.closed = request.closed or final
        try:
            send(*args)
        except Exception:  # the sender is gone (client left, model unloading)
            log.exception("request %d: sending a response failed; dropping the request", request.id)
            request.closed = True
            for seq in request.sequences:
                seq.finish(ABORT)

    def _retire(self) -> None:
        """Finished sequences leave the batch and free their KV slots."""
        rows = [i for i, s in enumerate(self.running) if not s.finished]
        if len(rows) != len(self.running):
            for i, seq in enumerate(self.running):
                if seq.finished and seq.finish_reason != ABORT:  # prompt + answer: a chat's next turn
                    self._remember(seq, functools.partial(self.cache.row, i), int(self.cache.lengths[i]))
            self.cache.keep(rows)
            self.running = [self.running[i] for i in rows]

    def _preempt_to_fit(self) -> None:
        count = self.scheduler.rows_to_preempt(self.cache.lengths)
        if count == 0:
            return
        if count == len(self.running):  # even the oldest sequence alone cannot grow: it has used the budget
            oldest = self.running[0]
            try:
                oldest.finish("length")
            except Exception:  # its final text could not be flushed
                log.exception("request %d: finishing failed", oldest.request.id)
                self._fail_requests([oldest], FAILED)
            self._emit(oldest.request)
            count -= 1
        staying = len(self.running) - count
        if count:
            log.info("KV budget full: preempting %d sequence(s) for recomputation", count)
            self.stats.preempted += count
            self.metrics.preempted(count)
            with self._lock:
                self.scheduler.requeue(self.running[staying:])
        rows = [i for i in range(staying) if not self.running[i].finished]
        self.cache.keep(rows)
        self.running = [self.running[i] for i in rows]

    def _reap_cancelled(self) -> None:
        now = time.monotonic()
        with self._lock:
            sequences = (*self.running, *(job.seq for job in self.prefilling), *self.scheduler.waiting)
            requests = {id(s.request): s.request for s in sequences}
        for request in requests.values():
            if request.closed or now - request.checked_at < self.config.cancel_check_s:
                continue
            request.checked_at = now
            if self._cancelled(request):
                for seq in request.sequences:
                    seq.finish(ABORT)
                self._deliver(request, True, request.sink.send, None, True)
        self._retire()

    def _log_stats(self) -> None:
        stats, self.stats = self.stats, EngineStats()
        if stats.generated or stats.prefilled:
            seconds = time.monotonic() - stats.since
            log.info(
                "%d running, %d waiting; %.1f tokens/s generated, %d prompt tokens prefilled, %d reused from "
                "the prefix cache, %d preempted", len(self.running), len(self.scheduler.waiting),
                stats.generated / seconds, stats.prefilled, stats.reused, stats.preempted,
            )

    @staticmethod
    def _cancelled(request: Request) -> bool:
        try:
            return request.sink.is_cancelled()
        except Exception:  # a sender that cannot answer has no one to answer to
            log.exception("request %d: is_cancelled failed; treating it as cancelled", request.id)
            return True

    def _report(self) -> None:
        """Once per iteration: the numbers the gauges show, to `metrics` (which publishes when due)."""
        with self._lock:
            waiting = sum(not s.finished for s in self.scheduler.waiting)
        cache = self.cache
        self.metrics.update(EngineState(
            running=len(self.running) + len(self.prefilling), waiting=waiting, decoding=cache.batch,
            kv_used=cache.batch * cache.width + sum(job.done for job in self.prefilling),
            kv_capacity=self.config.limits.max_kv_tokens, prefix_cache_tokens=self.prefix_cache.tokens_held,
        ))

    def _fail_requests(self, sequences, error: ModelError) -> None:
        """End the requests of these sequences with `error`: all their sequences stop (rows leave at the next
        retire, waiting ones are skipped by the scheduler)."""
        for request in {id(s.request): s.request for s in sequences}.values():
            for seq in request.sequences:
                seq.finish(ABORT)
            if not request.closed:
                self._deliver(request, True, request.sink.fail, error)

    def _fail_all(self, error: ModelError, include_waiting: bool = False) -> None:
        """Fail everything in flight (and the queue when stopping), and start over with an empty batch."""
        with self._lock:
            sequences = [*self.running, *(job.seq for job in self.prefilling), *self._admitted,
                         *(self.scheduler.waiting if include_waiting else ())]
            if include_waiting:
                self.scheduler.waiting.clear()
        self._fail_requests(sequences, error)
        self.running = []
        self.prefilling = []
        self._admitted = []
        self.cache = BatchCache(self.decoder.empty_past(1))
