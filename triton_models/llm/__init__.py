"""Chat-LLM engine for Triton's Python backend: continuous batching over an ONNX decoder with a KV cache.

Modules, one idea each: `params` (sampling parameters as vLLM's SamplingParams keys), `sampler` (per-sequence
logits processing and sampling), `stops` (stop strings across token boundaries), `detok` (incremental
detokenizer), `tokenizer` (the `tokenizers` wrapper and special tokens), `decoder` (the ONNX Runtime session),
`kv_cache` (the running batch's KV arrays), `prefix_cache` (recent prompts' KV for reuse), `prefill` (padded
batches, length groups, chunked jobs), `scheduler` (admission and bounds), `sequence` (requests and their
outputs), `config` (settings and counters), `metrics` (what the engine records for Triton's metrics
endpoint, and when it publishes), `engine` (the step loop thread) and `model` (the TritonPythonModel glue,
the only module importing `triton_python_backend_utils`).
"""
