"""Stable Diffusion 1.x/2.x as four ONNX networks plus a Python BLS pipeline model.

`python -m export_scripts diffusion` writes, for a served name N:
  N_text_encoder/  CLIP text model        input_ids [B, 77] int64 -> last_hidden_state [B, 77, D]
  N_unet/          UNet                   sample [B, C, h, w], timestep [B, 1], encoder_hidden_states -> out_sample
  N_vae_decoder/   VAE decoder            latent_sample [B, C, h, w] -> image [B, H, W, 3] in [0, 1]
  N_vae_encoder/   VAE encoder (edits)    image [B, H, W, 3] in [0, 1] -> latent_mean_std [B, 2C, h, w]
  N/               BLS pipeline (Python)  tokenizer.json + scheduler_config.json; openai_task "images"

The default, `tiny-sd-random`, is built from diffusers configs with random weights (fixed seed) and the
real CLIP BPE vocabulary of the open-clip-torch wheel: it exercises every layer of the stack and draws
noise-like pictures. `--model` takes a diffusers Stable Diffusion id or folder (sd-turbo included).
The export fails unless the numpy/ONNX Runtime pipeline matches diffusers on the same random draws: text to
image (`StableDiffusionPipeline`), image to image (`StableDiffusionImg2ImgPipeline`) and inpainting
(`StableDiffusionInpaintPipeline` over the same 4-channel UNet, its `apply_overlay` for the kept pixels).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from export_scripts.common import (
    EXPORT_SCRIPTS,
    PROJECT_ROOT,
    ExportError,
    export_digest,
    is_current,
    parameters,
    write_config,
    write_python_shim,
    write_stamp,
)
from triton_models.contract import SUPPORTS_EDITS

log = logging.getLogger(__name__)

TINY = "tiny-sd-random"
TINY_SEED = 0
TINY_SIZES = "64x64,128x128,256x256,512x512"
TOKEN_LENGTH = 77
PARITY_TOLERANCE = 1e-3  # max abs difference on [0, 1] pixels
PARITY_PROMPTS = ("a watercolor painting of a lighthouse at dawn", "A photo of an astronaut riding a horse on Mars")
PARITY_STRENGTHS = (0.6, 0.75)  # img2img, inpainting (each also at 1.0: diffusers' pure-noise start); >= 0.5
PIPELINE_MODULE = "triton_models.diffusion.model"
SOURCES = [Path(__file__), EXPORT_SCRIPTS / "common.py", PROJECT_ROOT / "triton_models" / "diffusion"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=TINY,
                        help=f"diffusers Stable Diffusion id or folder; {TINY!r} builds a random-weight test model")
    parser.add_argument("--name", help="served model name (default: the last part of --model)")
    parser.add_argument("--sizes", help=f"allowed WxH sizes, comma separated (default {TINY_SIZES} for the "
                                        "tiny model, up to the native size otherwise)")
    parser.add_argument("--steps", type=int, help="default steps (default 10 tiny, 1 turbo, 50 otherwise)")
    parser.add_argument("--guidance-scale", type=float, help="default guidance (default 0 turbo, 7.5 otherwise)")
    parser.add_argument("--scheduler", help="replace the pipeline's scheduler by this diffusers class, "
                                            "e.g. DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler")
    parser.add_argument("--max-n", type=int, default=4, help="most images per request")
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="intra_op_thread_count of each network (0: ORT's)")
    parser.add_argument("--instances", type=int, default=1, help="pipeline model instances")
    parser.add_argument("--opset", type=int, default=17)


def part_names(name: str) -> dict[str, str]:
    from triton_models.diffusion.pipeline import NETWORKS

    return {part: f"{name}_{part}" for part in NETWORKS}


def served_models(name: str = TINY) -> list[str]:
    """Every model one exported pipeline needs loaded, networks first."""
    return [*part_names(name).values(), name]


def run(args: argparse.Namespace) -> list[str]:
    name = args.name or Path(str(args.model).rstrip("/")).name
    repository = Path(args.repository)
    dirs = [repository / m for m in served_models(name)]
    options = {k: v for k, v in vars(args).items() if k not in ("repository", "force", "command")}
    model_path = Path(args.model)
    digest = export_digest(SOURCES + ([model_path] if model_path.is_dir() else []), {**options, "name": name})
    if not getattr(args, "force", False) and is_current(dirs, digest):
        log.info("%s is up to date", name)
        return served_models(name)

    import torch

    torch.manual_seed(TINY_SEED)
    pipe = build_tiny_pipeline() if args.model == TINY else load_pipeline(args.model)
    if args.scheduler:
        pipe.scheduler = _scheduler_class(args.scheduler).from_config(pipe.scheduler.config)
    settings = pipeline_settings(pipe, args, name)
    repository.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{name}-export-") as tmp:  # nothing half-written in the repository
        staging = Path(tmp)
        export_networks(pipe, staging, name, args.opset)
        write_pipeline_files(pipe, staging / name / "1")
        parity = check_parity(pipe, staging, name, settings)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staging / d.name), d)
    write_configs(repository, name, settings, args, hidden_size=pipe.text_encoder.config.hidden_size)
    write_stamp(dirs, digest, {"source": str(args.model), "random_weights": args.model == TINY,
                               "parity_max_abs_diff": parity})
    return served_models(name)


# -- building and loading --------------------------------------------------------------------------------

def clip_tokenizer_from_open_clip():
    """CLIPTokenizer from the BPE merges that ship in the open-clip-torch wheel (read, not copied)."""
    from transformers import CLIPTokenizer

    spec = importlib.util.find_spec("open_clip")  # not imported: it needs torchvision, we need one file
    if spec is None or not spec.submodule_search_locations:
        raise ExportError("the tiny model needs open-clip-torch for its CLIP vocabulary: pip install --no-deps "
                          "open-clip-torch")
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # the slice OpenAI's CLIP uses: 48,894 merges
    base = list(_bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges],
                              model_max_length=TOKEN_LENGTH)
    if len(tokenizer) != 49408:
        raise ExportError(f"CLIP vocabulary has {len(tokenizer)} tokens, expected 49408")
    return tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, in the order CLIP's vocabulary lists them."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def build_tiny_pipeline():
    """A Stable-Diffusion-shaped pipeline with random weights: 8x VAE, 2-level UNet, 4-layer CLIP text."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = clip_tokenizer_from_open_clip()
    hidden = 64
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=4,
        num_attention_heads=4, max_position_embeddings=TOKEN_LENGTH, projection_dim=hidden,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=hidden, attention_head_dim=8, norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(32, 32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=32, sample_size=256,
    )
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    return pipe


def load_pipeline(model: str):
    from diffusers import StableDiffusionPipeline

    try:
        pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False)
    except Exception as exc:
        raise ExportError(f"cannot load Stable Diffusion pipeline {model!r}: {exc}") from exc
    unet = pipe.unet.config
    if unet.get("time_cond_proj_dim") or unet.get("addition_embed_type") or unet.get("class_embed_type"):
        raise ExportError(f"{model!r}: UNets with extra conditioning (LCM, SDXL, class labels) are not supported")
    return pipe


def _scheduler_class(name: str):
    import diffusers

    from triton_models.diffusion.schedulers import SCHEDULERS

    if name not in SCHEDULERS:
        raise ExportError(f"--scheduler {name!r}: supported are {', '.join(SCHEDULERS)}")
    return getattr(diffusers, name)


def pipeline_settings(pipe, args, name: str) -> dict:
    """Config parameters of the pipeline model (limits, defaults, geometry)."""
    native = int(pipe.unet.config.sample_size) * pipe.vae_scale_factor
    turbo = "turbo" in str(args.model).lower()
    if args.sizes:
        sizes = args.sizes
    elif args.model == TINY:
        sizes = TINY_SIZES
    else:
        sizes = ",".join(f"{s}x{s}" for s in sorted({256, 512, native}) if s <= native)
    from triton_models.diffusion.pipeline import Settings

    try:
        parsed = Settings.parse_sizes(sizes)
    except ValueError as exc:
        raise ExportError(f"--sizes {sizes!r}: expected WxH[,WxH...]") from exc
    multiple = pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1)
    bad = [f"{w}x{h}" for w, h in parsed if w % multiple or h % multiple or w <= 0 or h <= 0]
    if bad:
        raise ExportError(f"sizes {', '.join(bad)} are not positive multiples of {multiple} for this model")
    return {
        "openai_task": "images",
        "sizes": ",".join(f"{w}x{h}" for w, h in parsed),
        "default_size": "512x512" if (512, 512) in parsed else f"{parsed[0][0]}x{parsed[0][1]}",
        "default_steps": args.steps or (10 if args.model == TINY else 1 if turbo else 50),
        "default_guidance_scale": args.guidance_scale if args.guidance_scale is not None else (0.0 if turbo else 7.5),
        "max_n": args.max_n,
        "max_steps": args.max_steps,
        "vae_scale_factor": pipe.vae_scale_factor,
        "latent_channels": pipe.unet.config.in_channels,
        "scheduler": pipe.scheduler.__class__.__name__,
        "source": str(args.model),
        "random_weights": str(args.model == TINY).lower(),
        SUPPORTS_EDITS: "true",  # every export has the VAE encoder that edits and variations need
        **{f"{part}_model": model for part, model in part_names(name).items()},
    }


# -- ONNX export ---------------------------------------------------------------------------------------

def export_networks(pipe, staging: Path, name: str, opset: int) -> None:
    import torch

    from triton_models.diffusion.pipeline import NETWORKS

    class TextEncoder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids):
            return self.model(input_ids=input_ids, return_dict=False)[0]

    class UNet(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, sample, timestep, encoder_hidden_states):
            # timestep is [B, 1]: Triton's batched inputs need a non-batch dimension.
            return self.model(sample, timestep[:, 0], encoder_hidden_states, return_dict=False)[0]

    class VaeDecoder(torch.nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae
            self.scaling = float(vae.config.scaling_factor)

        def forward(self, latent_sample):
            image = self.vae.decode(latent_sample / self.scaling, return_dict=False)[0]
            return (image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)  # diffusers' postprocess, NHWC

    class VaeEncoder(torch.nn.Module):
        """The decoder's mirror: [0, 1] NHWC in (diffusers' preprocess inside), the posterior out, scaled."""

        def __init__(self, vae):
            super().__init__()
            self.vae = vae
            self.scaling = float(vae.config.scaling_factor)

        def forward(self, image):
            posterior = self.vae.encode(image.permute(0, 3, 1, 2) * 2 - 1).latent_dist
            return torch.cat([posterior.mean, posterior.std], dim=1) * self.scaling

    names = part_names(name)
    hidden = pipe.text_encoder.config.hidden_size
    channels = pipe.unet.config.in_channels
    m = 2 ** (len(pipe.unet.config.block_out_channels) - 1)  # latent sizes must be multiples of this
    h, w = 2 * m, 3 * m  # distinct, >= 2: keeps every dimension dynamic in the trace
    batch = 2
    ids = torch.randint(0, 1000, (batch, TOKEN_LENGTH), dtype=torch.int64)
    states = torch.randn(batch, TOKEN_LENGTH, hidden)
    latents = torch.randn(batch, channels, h, w)
    timestep = torch.full((batch, 1), 500.0)
    pixels = torch.rand(batch, h * pipe.vae_scale_factor, w * pipe.vae_scale_factor, 3)
    modules = {"text_encoder": TextEncoder(pipe.text_encoder), "unet": UNet(pipe.unet),
               "vae_decoder": VaeDecoder(pipe.vae), "vae_encoder": VaeEncoder(pipe.vae)}
    examples = {"text_encoder": (ids,), "unet": (latents, timestep, states), "vae_decoder": (latents,),
                "vae_encoder": (pixels,)}
    spatial = {0: "batch", 2: "height", 3: "width"}
    pixel_axes = {0: "batch", 1: "pixel_height", 2: "pixel_width"}
    axes = {"input_ids": {0: "batch"}, "last_hidden_state": {0: "batch"}, "sample": spatial, "timestep": {0: "batch"},
            "encoder_hidden_states": {0: "batch"}, "out_sample": spatial, "latent_sample": spatial,
            "latent_mean_std": spatial}
    parts = [(names[part], modules[part], examples[part], list(inputs), [output])
             for part, (inputs, output) in NETWORKS.items()]
    for model_name, module, example, inputs, outputs in parts:
        path = staging / model_name / "1" / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("exporting %s", model_name)
        # `image` is the decoder's output and the encoder's input: pixels, not latents.
        dynamic = {k: pixel_axes if k == "image" else axes[k] for k in inputs + outputs}
        with torch.no_grad():
            torch.onnx.export(module.eval(), example, str(path), input_names=inputs, output_names=outputs,
                              dynamic_axes=dynamic, opset_version=opset, dynamo=False)


def write_pipeline_files(pipe, version_dir: Path) -> None:
    """tokenizer.json (padding and truncation to 77 built in), scheduler_config.json, the model.py shim."""
    from triton_models.diffusion.pipeline import SCHEDULER_FILE, TOKENIZER_FILE

    version_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = pipe.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise ExportError(f"tokenizer {type(tokenizer).__name__} has no fast (tokenizers) backend")
    backend = backend.__class__.from_str(backend.to_str())  # a copy: the reference pipeline stays untouched
    length = tokenizer.model_max_length
    backend.enable_truncation(max_length=length)
    backend.enable_padding(length=length, pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    backend.save(str(version_dir / TOKENIZER_FILE))
    config = {"_class_name": pipe.scheduler.__class__.__name__, **dict(pipe.scheduler.config)}
    (version_dir / SCHEDULER_FILE).write_text(json.dumps(config, indent=2, default=list) + "\n")
    write_python_shim(version_dir, PIPELINE_MODULE)


# -- parity ---------------------------------------------------------------------------------------------

def ort_pipeline(repository: Path, name: str, settings: dict, threads: int = 0):
    """The numpy pipeline over ONNX Runtime sessions of an exported model (parity checks, tests, bench)."""
    from triton_models.diffusion.pipeline import StableDiffusion, bind_networks
    from triton_models.ort_runner import create_session

    names = part_names(name)
    sessions = {part: create_session(repository / model / "1" / "model.onnx", threads) for part, model in names.items()}

    networks = bind_networks(lambda part, inputs, output: sessions[part].run([output], inputs)[0])
    return StableDiffusion.from_directory(repository / name / "1", networks,
                                          int(settings["vae_scale_factor"]), int(settings["latent_channels"]))


def check_parity(pipe, staging: Path, name: str, settings: dict) -> dict[str, float]:
    """ExportError unless tokens match exactly and images match diffusers within PARITY_TOLERANCE; the worst
    max abs difference of each kind of request (text to image, image to image, inpainting)."""
    from triton_models.diffusion.pipeline import ImageRequest, Settings
    from triton_models.diffusion.schedulers import UnsupportedSchedulerError

    try:
        ours = ort_pipeline(staging, name, settings)
    except UnsupportedSchedulerError as exc:
        raise ExportError(f"{exc}; pick one with --scheduler") from exc
    texts = ["", *PARITY_PROMPTS, "Ünïcödé, émoji 🚀 and   spaces", "word " * 100]
    expected = pipe.tokenizer(texts, padding="max_length", max_length=TOKEN_LENGTH, truncation=True).input_ids
    if ours.tokenizer(texts).tolist() != [list(e) for e in expected]:
        raise ExportError("exported tokenizer.json does not reproduce the pipeline's tokenizer")

    width, height = Settings.parse_sizes(settings["sizes"])[0]
    steps = min(int(settings["default_steps"]), 3 if settings["random_weights"] == "false" else 10)
    size = {"height": height, "width": width, "steps": steps}
    # An edit runs int(steps * strength) steps: at least one, also for sd-turbo's single step.
    edits = {**size, "image": parity_picture(height, width), "steps": max(steps, 2)}
    mask = parity_mask(height, width)
    img2img, inpaint = PARITY_STRENGTHS
    cases = [
        ImageRequest(PARITY_PROMPTS[0], seed=1, negative_prompt="blurry", n=2, guidance_scale=7.5, **size),
        ImageRequest(PARITY_PROMPTS[1], seed=2, n=1, guidance_scale=1.0, **size),
        ImageRequest(PARITY_PROMPTS[0], seed=3, n=2, guidance_scale=7.5, strength=img2img, **edits),
        ImageRequest("", seed=4, n=1, guidance_scale=7.5, strength=1.0, **edits),  # a variation
        ImageRequest(PARITY_PROMPTS[1], seed=5, n=2, negative_prompt="blurry", guidance_scale=7.5, mask=mask,
                     strength=inpaint, **edits),
        ImageRequest(PARITY_PROMPTS[0], seed=6, n=1, guidance_scale=1.0, mask=mask, strength=1.0, **edits),
    ]
    worst: dict[str, float] = {}
    for request in cases:
        kind = "inpainting" if request.inpainting else "image_to_image" if request.image is not None else \
            "text_to_image"
        diff = _parity_case(pipe, ours, request)
        worst[kind] = max(worst.get(kind, 0.0), diff)
        log.info("parity %s %dx%d n=%d steps=%d guidance=%.1f strength=%s: max abs diff %.2e", kind, width, height,
                 request.n, request.steps, request.guidance_scale,
                 request.strength if request.image is not None else "-", diff)
        if not diff <= PARITY_TOLERANCE:
            raise ExportError(f"parity: ONNX pipeline differs from diffusers by {diff:.2e} (> {PARITY_TOLERANCE}) "
                              f"on {kind.replace('_', ' ')}")
    return worst


def parity_picture(height: int, width: int) -> np.ndarray:
    """A fixed uint8 [H, W, 3] picture with gradients and edges (what an edit starts from in the checks)."""
    y, x = np.mgrid[0:height, 0:width]
    checks = ((x // 8 + y // 8) % 2) * 255
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), checks], axis=-1).astype(np.uint8)


def parity_mask(height: int, width: int) -> np.ndarray:
    """A uint8 [H, W] mask (255: redraw) whose edges fall inside latent cells, so nearest-neighbour matters."""
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[height // 4 + 3 : 3 * height // 4 - 2, width // 8 + 5 : width // 2 + 1] = 255
    return mask


def _parity_case(pipe, ours, request) -> float:
    """Max abs difference on [0, 1] pixels between our pipeline and diffusers' for one request, on the same
    random draws: torch's, in the order diffusers makes them (the image's posterior sample, then the noise)."""
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline
    from PIL import Image

    n, channels, h, w = ours.latent_shape(request)
    generator = torch.Generator().manual_seed(request.seed)
    posterior = torch.randn((1, channels, h, w), generator=generator) if request.image is not None else None
    noise = torch.randn((n, channels, h, w), generator=generator)
    got = ours.generate(request, latents=noise.numpy(),
                        posterior_noise=None if posterior is None else posterior.numpy())
    common = {"negative_prompt": request.negative_prompt or None, "num_inference_steps": request.steps,
              "guidance_scale": request.guidance_scale, "num_images_per_prompt": n, "output_type": "np"}
    with torch.no_grad():
        if request.image is None:
            want = pipe(request.prompt, height=request.height, width=request.width, latents=noise, **common).images
        elif not request.inpainting:
            img2img = StableDiffusionImg2ImgPipeline.from_pipe(pipe)
            want = img2img(request.prompt, image=Image.fromarray(request.image), strength=request.strength,
                           generator=torch.Generator().manual_seed(request.seed), **common).images
        else:
            inpaint = StableDiffusionInpaintPipeline.from_pipe(pipe)
            init, mask = Image.fromarray(request.image), Image.fromarray(request.mask)
            want = inpaint(request.prompt, image=init, mask_image=mask, height=request.height, width=request.width,
                           strength=request.strength, generator=torch.Generator().manual_seed(request.seed),
                           **common).images
            _check_overlay(inpaint, request, got, want, init, mask)
    if got.shape != want.shape:
        raise ExportError(f"parity: image shape {got.shape} != diffusers {want.shape}")
    return float(np.abs(got - want).max())


def _check_overlay(inpaint, request, got: np.ndarray, want: np.ndarray, init, mask) -> None:
    """Our kept pixels (`to_output`) against diffusers' `apply_overlay` of its own output: one rounding apart."""
    from triton_models.diffusion.pipeline import to_output

    ours = to_output(got, request).astype(int)
    theirs = np.stack([np.asarray(inpaint.image_processor.apply_overlay(mask, init, image))
                       for image in inpaint.image_processor.numpy_to_pil(want)]).astype(int)
    if ours.shape != theirs.shape or np.abs(ours - theirs).max() > 1:
        raise ExportError("parity: the inpainted images' kept pixels differ from diffusers' apply_overlay")


# -- Triton configs ---------------------------------------------------------------------------------------

def write_configs(repository: Path, name: str, settings: dict, args, hidden_size: int) -> None:
    from triton_models.diffusion.pipeline import Settings

    names = part_names(name)
    channels = int(settings["latent_channels"])
    batch = 2 * args.max_n  # classifier-free guidance doubles the UNet batch
    network = {"backend": "onnxruntime", "max_batch_size": batch, "dynamic_batching": {},
               "instance_group": [{"count": 1, "kind": "KIND_CPU"}]}
    threads = {"intra_op_thread_count": args.threads} if args.threads else {}
    network["parameters"] = parameters(**threads)
    # TensorRT profile bounds for the latent height/width (docker/build_engines.py reads them).
    factor = int(settings["vae_scale_factor"])
    sizes = Settings.parse_sizes(settings["sizes"])
    extents = [d // factor for size in sizes for d in size]
    default_w, default_h = Settings.parse_sizes(settings["default_size"])[0]
    latent = {**network, "parameters": parameters(
        **threads, trt_min_extent=min(extents), trt_opt_extent=max(default_w, default_h) // factor,
        trt_max_extent=max(extents))}
    # The VAE encoder's dynamic dims are pixels: the same bounds, not divided by the VAE's factor.
    pixel = {**network, "parameters": parameters(
        **threads, trt_min_extent=min(extents) * factor, trt_opt_extent=max(default_w, default_h),
        trt_max_extent=max(extents) * factor)}

    def tensor(n, dtype, dims, **extra):
        return {"name": n, "data_type": dtype, "dims": dims, **extra}

    write_config(repository / names["text_encoder"], {
        "name": names["text_encoder"], **network,
        "input": [tensor("input_ids", "TYPE_INT64", [TOKEN_LENGTH])],
        "output": [tensor("last_hidden_state", "TYPE_FP32", [TOKEN_LENGTH, hidden_size])],
    })
    write_config(repository / names["unet"], {
        "name": names["unet"], **latent,
        "input": [tensor("sample", "TYPE_FP32", [channels, -1, -1]), tensor("timestep", "TYPE_FP32", [1]),
                  tensor("encoder_hidden_states", "TYPE_FP32", [TOKEN_LENGTH, hidden_size])],
        "output": [tensor("out_sample", "TYPE_FP32", [channels, -1, -1])],
    })
    write_config(repository / names["vae_decoder"], {
        "name": names["vae_decoder"], **latent,
        "input": [tensor("latent_sample", "TYPE_FP32", [channels, -1, -1])],
        "output": [tensor("image", "TYPE_FP32", [-1, -1, 3])],
    })
    write_config(repository / names["vae_encoder"], {
        "name": names["vae_encoder"], **pixel,
        "input": [tensor("image", "TYPE_FP32", [-1, -1, 3])],
        "output": [tensor("latent_mean_std", "TYPE_FP32", [2 * channels, -1, -1])],
    })
    optional = {"optional": True}
    write_config(repository / name, {
        "name": name, "backend": "python", "max_batch_size": 0,
        "input": [
            tensor("prompt", "TYPE_STRING", [1]),
            # Required: the cache key is the inputs, so output must be a function of them (the frontend
            # draws a random seed when the user gives none).
            tensor("seed", "TYPE_INT64", [1]),
            tensor("negative_prompt", "TYPE_STRING", [1], **optional),
            tensor("n", "TYPE_INT32", [1], **optional),
            tensor("height", "TYPE_INT32", [1], **optional),
            tensor("width", "TYPE_INT32", [1], **optional),
            tensor("steps", "TYPE_INT32", [1], **optional),
            tensor("guidance_scale", "TYPE_FP32", [1], **optional),
            # Edits (contract.SUPPORTS_EDITS): the picture at the output size, where to redraw, how much.
            tensor("image", "TYPE_UINT8", [-1, -1, 3], **optional),
            tensor("mask", "TYPE_UINT8", [-1, -1], **optional),
            tensor("strength", "TYPE_FP64", [1], **optional),
        ],
        "output": [tensor("images", "TYPE_UINT8", [-1, -1, -1, 3])],
        "instance_group": [{"count": args.instances, "kind": "KIND_CPU"}],
        "response_cache": {"enable": True},
        "parameters": parameters(**settings),
    })
