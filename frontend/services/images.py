"""Images: OpenAI's generations, edits and variations -> the diffusion pipeline model in Triton -> PNGs, inline
or as URLs.

Edits and variations are the same model call with an `image` (frontend/images_upload.py prepares it): an
edit redraws it after its prompt where its mask (or the image's own transparency) says, or wholly; a variation
redraws it wholly with no prompt, which is what Stable Diffusion was trained to do unprompted (10% of its
training captions were dropped), at contract.VARIATION_STRENGTH, so the picture's composition survives and its
details change. With no prompt there is nothing for classifier-free guidance to push towards, and the model
skips it. OpenAI's DALL-E variations embed the image instead (CLIP image embeddings); a Stable Diffusion text
model has no input for that.

Seeds: the pipeline model requires one (Triton's response cache keys on the inputs, so the output must be a
function of them). When the user gives none, a random one is drawn here, so requests without a seed still
differ and requests with one are answered from the cache when repeated.

URLs keep nothing on disk: a link carries the request's Triton inputs, the image index and the name of
the API key that made it, signed with HMAC-SHA256 and with an expiry time. A fetch is admitted against
that key's limits (the URL is its own credential, so the key that minted it pays), and is answered from a
bounded in-memory cache of the PNGs this replica made; elsewhere the same inputs are sent again, which
Triton answers from its response cache (or, once evicted, recomputes: the same seed gives the same bytes).
Any replica holding the same secret can serve it; the parameters are signed, not encrypted. An edit's link
cannot carry its input image: it names the image by digest and is served from the replica's PNG cache only
(410 once evicted; `b64_json` does not depend on it).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import math
import secrets
import struct
import time
import zlib
from collections.abc import Awaitable, Callable

import numpy as np
from cachetools import TTLCache

from frontend.context import RequestContext
from frontend.errors import ClientClosedRequest, Gone, InvalidRequest, NotFound
from frontend.images_upload import EditImages, UploadLimits, Uploads
from frontend.protocol.images import (
    BaseImageRequest,
    ImageEditRequest,
    ImageGenerationRequest,
    ImageUploadRequest,
)
from frontend.registry import ModelRegistry, ServedModel
from frontend.triton import Backend
from triton_models.contract import (
    EDIT_STRENGTH,
    INPAINT_STRENGTH,
    SUPPORTS_EDITS,
    VARIATION_STRENGTH,
    edit_steps,
)

log = logging.getLogger(__name__)

TASK = "images"
# Tensor names of the diffusion pipeline model (triton_models/diffusion/model.py; checked by tests).
OUTPUT = "images"
STRING_INPUTS = ("prompt", "negative_prompt")
INPUT_TYPES = {"seed": np.int64, "n": np.int32, "height": np.int32, "width": np.int32, "steps": np.int32,
               "guidance_scale": np.float32}
EDIT_INPUT_TYPES = {"image": np.uint8, "mask": np.uint8, "strength": np.float64}  # contract.SUPPORTS_EDITS
DISCONNECT_POLL_S = 0.5


def encode_png(image: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of a uint8 [height, width, 3] array (zlib only: no imaging library needed)."""
    height, width, _ = image.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, width * 3)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, truecolour, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + chunk(b"IEND", b""))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ImageLinks:
    """Signed, expiring tokens that carry what is needed to fetch one image again."""

    def __init__(self, secret: bytes, ttl_s: float, clock: Callable[[], float] = time.time):
        self.secret = secret or secrets.token_bytes(32)  # per process: links die with it
        self.ttl_s = ttl_s
        self.clock = clock

    def _signature(self, body: str) -> str:
        return _b64(hmac.new(self.secret, body.encode("ascii"), hashlib.sha256).digest())

    def sign(self, payload: dict) -> str:
        payload = {**payload, "exp": int(self.clock() + self.ttl_s)}
        body = _b64(zlib.compress(json.dumps(payload, separators=(",", ":")).encode(), 9))
        return f"{body}.{self._signature(body)}"

    def verify(self, token: str) -> tuple[dict, int]:
        """(payload, seconds left); NotFound for a forged or garbled token, Gone once it has expired."""
        body, _, signature = token.partition(".")
        if not body or not hmac.compare_digest(signature, self._signature(body)):
            raise NotFound("No such image", code="image_not_found")
        payload = json.loads(zlib.decompress(_unb64(body)))
        left = int(payload["exp"] - self.clock())
        if left <= 0:
            raise Gone("This image URL has expired; generate the image again", code="image_url_expired")
        return payload, left


def triton_inputs(values: dict, edit: EditImages | None = None) -> dict[str, np.ndarray]:
    """The pipeline model's input tensors, always all of them (so a URL fetch repeats the cache key); an
    edit's image, mask and strength too."""
    tensors = {name: np.array([values[name].encode()], dtype=np.object_) for name in STRING_INPUTS}
    tensors.update({name: np.array([values[name]], dtype=dtype) for name, dtype in INPUT_TYPES.items()})
    if edit is not None:
        tensors["image"] = edit.image
        if edit.mask is not None:
            tensors["mask"] = edit.mask
        tensors["strength"] = np.array([values["strength"]], dtype=EDIT_INPUT_TYPES["strength"])
    return tensors


async def cancel_on_disconnect(call: Awaitable, is_disconnected: Callable[[], Awaitable[bool]]):
    """Await `call`, cancelling it (and so the Triton request) when the HTTP client goes away."""
    task = asyncio.ensure_future(call)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await is_disconnected():
                raise ClientClosedRequest("the client closed the connection")
    finally:
        if not task.done():
            task.cancel()


def _image_id(model: str, values: dict, index: int) -> str:
    """What identifies one generated image, whoever minted its link and when."""
    return hashlib.sha256(json.dumps([model, values, index], sort_keys=True).encode()).hexdigest()


_KEEPS_NO_FILES = ("use response_format b64_json: an edit's URL is served from this server's memory, which keeps "
                   "no images this large (MODELGATE_IMAGES_FILE_CACHE_BYTES)")

# Admits the request as the named API key (its limits apply); raises NotFound when no such key is left.
Admit = Callable[[RequestContext, str], Awaitable[None]]


class ImageService:
    def __init__(self, backend: Backend, registry: ModelRegistry, links: ImageLinks, admit: Admit,
                 public_url: str = "", cache_bytes: int = 64 * 1024 * 1024,
                 upload_limits: UploadLimits | None = None):
        self.backend = backend
        self.registry = registry
        self.links = links
        self.admit = admit
        self.public_url = public_url.rstrip("/")
        self.upload_limits = upload_limits or UploadLimits()
        # PNGs behind this replica's URLs, until their links expire (or the LRU needs the room).
        self.files: TTLCache = TTLCache(maxsize=cache_bytes, ttl=links.ttl_s, getsizeof=len)

    def _keep(self, image_id: str, png: bytes) -> None:
        if len(png) <= self.files.maxsize:
            self.files[image_id] = png

    async def _model(self, name: str | None, edits: bool = False) -> ServedModel:
        """The named model, or the first ready one of the task (that edits, for `edits`)."""
        if name:
            model = await self.registry.get(name, TASK)
        else:
            served = [m for m in await self.registry.list() if m.task == TASK and m.ready
                      and (not edits or _edits(m))]
            if not served:
                what = "image editing" if edits else "image generation"
                raise NotFound(f"No {what} model is loaded", param="model", code="model_not_found")
            model = served[0]
        if edits and not _edits(model):
            raise InvalidRequest(f"`{model.name}` does not edit images (its export has no VAE encoder; export it "
                                 "again with `python -m export_scripts diffusion`)", param="model",
                                 code="model_not_supported")
        return model

    def _values(self, request: BaseImageRequest, model: ServedModel, prompt: str,
                default_size: str | None = None) -> dict:
        params = model.parameters
        sizes = model_sizes(model)
        if request.size not in (None, "auto"):
            size = request.size
        elif default_size in sizes:
            size = default_size
        else:
            size = params.get("default_size") or sizes[0]
        if size not in sizes:
            raise InvalidRequest(f"size {request.size!r} is not supported by `{model.name}`; use one of "
                                 f"{', '.join(sizes)}", param="size")
        max_n = model.int_param("max_n", 1)
        if request.n > max_n:
            raise InvalidRequest(f"n must be at most {max_n} for `{model.name}`, got {request.n}", param="n")
        steps = request.steps or model.int_param("default_steps", 50)
        max_steps = model.int_param("max_steps")
        if max_steps is not None and steps > max_steps:
            raise InvalidRequest(f"steps must be at most {max_steps}, got {steps}", param="steps")
        width, height = (int(v) for v in size.split("x"))
        guidance = request.guidance_scale
        return {
            "prompt": prompt, "negative_prompt": request.negative_prompt or "",
            "seed": request.seed if request.seed is not None else secrets.randbits(63),
            "n": request.n, "width": width, "height": height, "steps": steps,
            "guidance_scale": guidance if guidance is not None else float(params.get("default_guidance_scale", 7.5)),
        }

    async def generate(self, request: ImageGenerationRequest, ctx: RequestContext, base_url: str,
                       is_disconnected: Callable[[], Awaitable[bool]]) -> dict:
        model = await self._model(request.model)
        values = self._values(request, model, request.prompt)
        log.info("images: model=%s n=%d size=%dx%d steps=%d quality=%s style=%s user=%s request=%s",
                 model.name, values["n"], values["width"], values["height"], values["steps"], request.quality,
                 request.style, request.user, ctx.request_id)
        return await self._answer(request, model, values, None, ctx, base_url, is_disconnected)

    async def edit(self, request: ImageUploadRequest, ctx: RequestContext, base_url: str,
                   is_disconnected: Callable[[], Awaitable[bool]]) -> dict:
        """An edit (ImageEditRequest) or a variation (ImageVariationRequest) of the request's image."""
        model = await self._model(request.model, edits=True)
        ctx.model = model.name  # admission labels JSON bodies only; a multipart one is labelled here
        if request.response_format != "b64_json" and not self.files.maxsize:
            raise InvalidRequest(_KEEPS_NO_FILES, param="response_format")
        is_edit = isinstance(request, ImageEditRequest)
        mask = request.mask.data if is_edit and request.mask is not None else None
        uploads = await asyncio.to_thread(Uploads, request.image.data, mask, self.upload_limits)
        values = self._values(request, model, request.prompt if is_edit else "", "{}x{}".format(*uploads.size))
        size = (values["width"], values["height"])
        if is_edit:
            images = await asyncio.to_thread(uploads.for_edit, size)
        else:  # a variation redraws the whole picture, whatever its transparency
            images = EditImages(await asyncio.to_thread(uploads.rgb, size), None)
        default = VARIATION_STRENGTH if not is_edit else EDIT_STRENGTH if images.mask is None else INPAINT_STRENGTH
        values["strength"] = strength = request.strength if request.strength is not None else default
        if request.steps is None:  # a default schedule long enough to run a step of the edit (sd-turbo's is 1)
            values["steps"] = max(values["steps"], _steps_for(strength, model.int_param("max_steps")))
        if edit_steps(values["steps"], strength) < 1:  # refused here: the model's refusal would be cached
            raise InvalidRequest(f"{values['steps']} steps at strength {strength:g} run no step of the edit; raise "
                                 "steps or strength", param="strength" if request.strength is not None else "steps")
        # A link cannot carry the pictures: it names them, so that two edits never share an image id.
        values["image_sha256"] = hashlib.sha256(images.image.tobytes()).hexdigest()
        if images.mask is not None:
            values["mask_sha256"] = hashlib.sha256(images.mask.tobytes()).hexdigest()
        log.info("images %s: model=%s n=%d size=%dx%d steps=%d strength=%g mask=%s quality=%s user=%s request=%s",
                 "edit" if is_edit else "variation", model.name, values["n"], *size, values["steps"],
                 values["strength"], images.mask is not None, getattr(request, "quality", None), request.user,
                 ctx.request_id)
        return await self._answer(request, model, values, images, ctx, base_url, is_disconnected)

    async def _answer(self, request: BaseImageRequest, model: ServedModel, values: dict, edit: EditImages | None,
                      ctx: RequestContext, base_url: str, is_disconnected: Callable[[], Awaitable[bool]]) -> dict:
        call = self.backend.infer(model.name, triton_inputs(values, edit), [OUTPUT], request_id=ctx.request_id)
        images = (await cancel_on_disconnect(call, is_disconnected))[OUTPUT]
        pngs = await asyncio.to_thread(lambda: [encode_png(image) for image in images])
        if request.response_format == "b64_json":
            data = [{"b64_json": base64.b64encode(png).decode("ascii")} for png in pngs]
        else:
            if edit is not None and any(len(png) > self.files.maxsize for png in pngs):
                raise InvalidRequest(_KEEPS_NO_FILES, param="response_format")
            root = self.public_url or base_url.rstrip("/")
            data = []
            for i, png in enumerate(pngs):
                self._keep(_image_id(model.name, values, i), png)
                token = self.links.sign({"m": model.name, "v": values, "i": i, "k": ctx.key.name if ctx.key else ""})
                data.append({"url": f"{root}/v1/images/files/{token}"})
        return {"created": int(time.time()), "data": data, "size": f"{values['width']}x{values['height']}",
                "output_format": "png"}

    async def fetch(self, token: str, ctx: RequestContext) -> tuple[bytes, int]:
        """(PNG bytes, seconds the link has left) for a token made by `generate` or `edit`, admitted as its key."""
        try:
            payload, left = self.links.verify(token)
            name, values, index, key = payload["m"], payload["v"], int(payload["i"]), str(payload["k"])
        except (ValueError, KeyError, TypeError, zlib.error) as exc:  # signed by us but unreadable
            raise NotFound("No such image", code="image_not_found") from exc
        await self.admit(ctx, key)
        image_id = _image_id(name, values, index)
        png = self.files.get(image_id)
        if png is not None:
            return png, left
        if "image_sha256" in values:  # an edit: its input image is not in the link, so it cannot be redrawn
            raise Gone("This edited image is no longer held by the server (an edit's URL is served from memory "
                       "while it lasts); edit again, or ask for b64_json", code="image_evicted")
        model = await self.registry.get(name, TASK)
        images = (await self.backend.infer(model.name, triton_inputs(values), [OUTPUT],
                                           request_id=ctx.request_id))[OUTPUT]
        if not 0 <= index < len(images):
            raise NotFound("No such image", code="image_not_found")
        png = await asyncio.to_thread(encode_png, images[index])
        self._keep(image_id, png)
        return png, left


def _edits(model: ServedModel) -> bool:
    return model.parameters.get(SUPPORTS_EDITS) == "true"


def model_sizes(model: ServedModel) -> list[str]:
    """The sizes an images model draws ("512x512", ...), from its config's `sizes` parameter."""
    return [s.strip() for s in model.parameters.get("sizes", "").split(",") if s.strip()]


def _steps_for(strength: float, max_steps: int | None) -> int:
    """The fewest steps of which an edit at `strength` runs one (within max_steps: beyond, the model says)."""
    ceiling = max_steps or 1000  # no schedule is longer: SD trains on 1000 timesteps
    if strength * ceiling < 1:  # also keeps 1 / strength finite
        return ceiling
    steps = math.ceil(1 / strength)
    steps += edit_steps(steps, strength) < 1  # 1 / strength rounded down by a hair
    return min(steps, ceiling)
