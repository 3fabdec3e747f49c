"""The diffusion exporter: files, Triton configs against the ONNX graphs, tokenizer, parity, refusals."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from export_scripts.__main__ import main as export_main
from export_scripts.common import ExportError, read_config
from export_scripts.diffusion import (
    TINY,
    build_tiny_pipeline,
    check_parity,
    clip_tokenizer_from_open_clip,
    part_names,
    served_models,
)
from triton_models.diffusion.pipeline import OUTPUT, SCHEDULER_FILE, TOKENIZER_FILE, PromptTokenizer
from triton_models.diffusion.schedulers import make_scheduler

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("diffusion-repo")
    assert export_main(["diffusion", f"--repository={path}", "--max-n=3", "--threads=1"]) == 0
    return path


def config(repo, name):
    return read_config(repo / name / "config.pbtxt")


def params(repo, name):
    return {k: v.string_value for k, v in config(repo, name).parameters.items()}


def test_writes_every_model(repo):
    assert served_models() == [f"{TINY}_text_encoder", f"{TINY}_unet", f"{TINY}_vae_decoder", f"{TINY}_vae_encoder",
                               TINY]
    for name in served_models():
        assert (repo / name / "config.pbtxt").exists() and (repo / name / ".export.json").exists()
    assert (repo / TINY / "1" / "model.py").read_text().count("from triton_models.diffusion.model import") == 1
    for file in (TOKENIZER_FILE, SCHEDULER_FILE):
        assert (repo / TINY / "1" / file).exists()


@pytest.mark.parametrize("part", ["text_encoder", "unet", "vae_decoder", "vae_encoder"])
def test_network_configs_match_onnx_graphs(repo, part):
    name = part_names(TINY)[part]
    cfg = config(repo, name)
    graph = onnx.load(str(repo / name / "1" / "model.onnx"), load_external_data=False).graph
    assert [i.name for i in cfg.input] == [i.name for i in graph.input]
    assert [o.name for o in cfg.output] == [o.name for o in graph.output]
    for tensor, value in zip([*cfg.input, *cfg.output], [*graph.input, *graph.output]):
        dims = [d.dim_value or -1 for d in value.type.tensor_type.shape.dim]
        assert dims[0] == -1, f"{tensor.name}: batch dimension must be dynamic"
        assert len(tensor.dims) == len(dims) - 1, tensor.name
        assert all(d == m or m == -1 for d, m in zip(tensor.dims, dims[1:])), tensor.name  # as Triton checks
    assert cfg.backend == "onnxruntime" and cfg.max_batch_size == 6  # 2 x max_n: guidance doubles the batch
    assert cfg.HasField("dynamic_batching")
    assert cfg.parameters["intra_op_thread_count"].string_value == "1"
    extents = {k: cfg.parameters[f"trt_{k}_extent"].string_value for k in ("min", "opt", "max")
               if f"trt_{k}_extent" in cfg.parameters}
    if part in ("unet", "vae_decoder"):  # TensorRT profile over latent sizes: 64..512 px at 8x
        assert extents == {"min": "8", "opt": "64", "max": "64"}
    elif part == "vae_encoder":  # its dynamic dims are pixels
        assert extents == {"min": "64", "opt": "512", "max": "512"}


def test_pipeline_config(repo):
    cfg = config(repo, TINY)
    p = params(repo, TINY)
    assert cfg.backend == "python" and cfg.max_batch_size == 0 and cfg.response_cache.enable
    inputs = {i.name: i for i in cfg.input}
    assert set(inputs) == {"prompt", "seed", "negative_prompt", "n", "height", "width", "steps", "guidance_scale",
                           "image", "mask", "strength"}
    assert not inputs["prompt"].optional and not inputs["seed"].optional  # cache key must fix the output
    assert all(inputs[n].optional for n in inputs if n not in ("prompt", "seed"))
    assert [o.name for o in cfg.output] == [OUTPUT]
    assert p["openai_task"] == "images" and p["random_weights"] == "true" and p["source"] == TINY
    assert p["sizes"] == "64x64,128x128,256x256,512x512" and p["default_size"] == "512x512"
    assert (p["default_steps"], p["default_guidance_scale"], p["max_n"]) == ("10", "7.5", "3")
    assert p["scheduler"] == "DDIMScheduler" and p["supports_edits"] == "true"
    for part, model in part_names(TINY).items():
        assert p[f"{part}_model"] == model
    scheduler_config = json.loads((repo / TINY / "1" / SCHEDULER_FILE).read_text())
    assert make_scheduler(scheduler_config).__class__.__name__ == "DDIMScheduler"


def test_tokenizer_matches_clip_tokenizer(repo):
    ours = PromptTokenizer(repo / TINY / "1" / TOKENIZER_FILE)
    reference = clip_tokenizer_from_open_clip()
    texts = ["", "a photo of a cat", "A PHOTO of  a\tCAT!!", "naïve café, 東京 🚀", "don't it's we'll",
             "word " * 200, "1234567 3.14 #hashtag @user"]
    expected = reference(texts, padding="max_length", max_length=77, truncation=True).input_ids
    got = ours(texts)
    assert got.shape == (len(texts), 77) and got.dtype == np.int64
    assert got.tolist() == [list(e) for e in expected]
    assert got[0, :3].tolist() == [49406, 49407, 49407]  # start, end, end-padding
    assert got[5, -1] == 49407  # truncated prompts still end with the end token


def test_clip_vocabulary_is_openai_clip():
    tokenizer = clip_tokenizer_from_open_clip()
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_unchanged_export_is_skipped(repo):
    onnx_file = repo / part_names(TINY)["unet"] / "1" / "model.onnx"
    before = onnx_file.stat().st_mtime_ns
    assert export_main(["diffusion", f"--repository={repo}", "--max-n=3", "--threads=1"]) == 0
    assert onnx_file.stat().st_mtime_ns == before


def test_parity_check_catches_a_wrong_network(repo):
    import torch

    settings = params(repo, TINY)
    torch.manual_seed(0)
    pipe = build_tiny_pipeline()
    worst = check_parity(pipe, repo, TINY, settings)
    assert set(worst) == {"text_to_image", "image_to_image", "inpainting"} and max(worst.values()) <= 1e-3
    stamp = json.loads((repo / TINY / ".export.json").read_text())
    assert set(stamp["parity_max_abs_diff"]) == set(worst)
    with torch.no_grad():
        pipe.vae.quant_conv.bias += 0.05  # the exported ONNX VAE encoder no longer matches: edits differ
    with pytest.raises(ExportError, match="differs from diffusers by .* on image to image"):
        check_parity(pipe, repo, TINY, settings)
    with torch.no_grad():
        pipe.vae.quant_conv.bias -= 0.05
        pipe.unet.conv_out.bias += 0.05  # the exported ONNX UNet no longer matches
    with pytest.raises(ExportError, match="parity: ONNX pipeline differs from diffusers .* on text to image"):
        check_parity(pipe, repo, TINY, settings)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheduler=LCMScheduler"], "supported are DDIMScheduler"),
        (["--sizes=60x60"], "not positive multiples of 16"),
        (["--model=/nonexistent/sd-folder"], "cannot load Stable Diffusion pipeline"),
    ],
)
def test_refusals(tmp_path, capsys, args, message):
    assert export_main(["diffusion", f"--repository={tmp_path}", *args]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("folder", "scheduler", "expected"),
    [
        # Stable Diffusion 1.x ships PLMS; sd-turbo ships Euler with trailing spacing, 1 step, no guidance.
        ("sd-v1-tiny", {"_class_name": "PNDMScheduler", "skip_prk_steps": True, "steps_offset": 1},
         {"scheduler": "PNDMScheduler", "default_steps": "50", "default_guidance_scale": "7.5"}),
        ("sd-turbo-tiny", {"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "trailing"},
         {"scheduler": "EulerDiscreteScheduler", "default_steps": "1", "default_guidance_scale": "0.0"}),
    ],
)
def test_exports_a_diffusers_folder(tmp_path, folder, scheduler, expected):
    import diffusers
    import torch

    torch.manual_seed(1)
    pipe = build_tiny_pipeline()
    config = {**dict(pipe.scheduler.config), **scheduler}
    pipe.scheduler = getattr(diffusers, config.pop("_class_name")).from_config(config)
    pipe.save_pretrained(tmp_path / folder)
    repo = tmp_path / "repo"
    assert export_main(["diffusion", f"--repository={repo}", f"--model={tmp_path / folder}"]) == 0
    p = params(repo, folder)
    assert {k: p[k] for k in expected} == expected
    assert p["sizes"] == "256x256" and p["random_weights"] == "false"  # native size: sample_size 32 x 8
    assert (repo / folder / "1" / TOKENIZER_FILE).exists()


def test_scheduler_can_be_replaced(tmp_path):
    assert export_main(["diffusion", f"--repository={tmp_path}", "--name=tiny-dpm",
                        "--scheduler=DPMSolverMultistepScheduler"]) == 0  # parity checked against diffusers' own
    assert params(tmp_path, "tiny-dpm")["scheduler"] == "DPMSolverMultistepScheduler"
    assert json.loads((tmp_path / "tiny-dpm" / "1" / SCHEDULER_FILE).read_text())["beta_schedule"] == "scaled_linear"
