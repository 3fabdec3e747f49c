"""Image generation: OpenAI's request -> the diffusion pipeline model in Triton -> PNGs, inline or as URLs.

Seeds: the pipeline model requires one (Triton's response cache keys on the inputs, so the output must be a
function of them). When the user gives none, a random one is drawn here, so requests without a seed still
differ and requests with one are answered from the cache when repeated.

URLs keep nothing on disk: a link carries the request's Triton inputs, the image index and the name of
the API key that made it, signed with HMAC-SHA256 and with an expiry time. A fetch is admitted against
that key's limits (the URL is its own credential, so the key that minted it pays), and is answered from a
bounded in-memory cache of the PNGs this replica made; elsewhere the same inputs are sent again, which
Triton answers from its response cache (or, once evicted, recomputes: the same seed gives the same bytes).
Any replica holding the same secret can serve it; the parameters are signed, not encrypted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import struct
import time
import zlib
from collections.abc import Awaitable, Callable

import numpy as np
from cachetools import TTLCache

from frontend.context import RequestContext
from frontend.errors import ClientClosedRequest, Gone, InvalidRequest, NotFound
from frontend.protocol.images import ImageGenerationRequest
from frontend.registry import ModelRegistry, ServedModel
from frontend.triton import Backend

log = logging.getLogger(__name__)

TASK = "images"
# Tensor names of the diffusion pipeline model (triton_models/diffusion/model.py; checked by tests).
OUTPUT = "images"
STRING_INPUTS = ("prompt", "negative_prompt")
INPUT_TYPES = {"seed": np.int64, "n": np.int32, "height": np.int32, "width": np.int32, "steps": np.int32,
               "guidance_scale": np.float32}
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


def triton_inputs(values: dict) -> dict[str, np.ndarray]:
    """The pipeline model's input tensors, always all of them (so a URL fetch repeats the cache key)."""
    tensors = {name: np.array([values[name].encode()], dtype=np.object_) for name in STRING_INPUTS}
    tensors.update({name: np.array([values[name]], dtype=dtype) for name, dtype in INPUT_TYPES.items()})
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


# Admits the request as the named API key (its limits apply); raises NotFound when no such key is left.
Admit = Callable[[RequestContext, str], Awaitable[None]]


class ImageService:
    def __init__(self, backend: Backend, registry: ModelRegistry, links: ImageLinks, admit: Admit,
                 public_url: str = "", cache_bytes: int = 64 * 1024 * 1024):
        self.backend = backend
        self.registry = registry
        self.links = links
        self.admit = admit
        self.public_url = public_url.rstrip("/")
        # PNGs behind this replica's URLs, until their links expire (or the LRU needs the room).
        self.files: TTLCache = TTLCache(maxsize=cache_bytes, ttl=links.ttl_s, getsizeof=len)

    def _keep(self, image_id: str, png: bytes) -> None:
        if len(png) <= self.files.maxsize:
            self.files[image_id] = png

    async def _model(self, name: str | None) -> ServedModel:
        if name:
            return await self.registry.get(name, TASK)
        served = [m for m in await self.registry.list() if m.task == TASK and m.ready]
        if not served:
            raise NotFound("No image generation model is loaded", param="model", code="model_not_found")
        return served[0]

    def _values(self, request: ImageGenerationRequest, model: ServedModel) -> dict:
        params = model.parameters
        sizes = [s.strip() for s in params.get("sizes", "").split(",") if s.strip()]
        size = (params.get("default_size") or sizes[0]) if request.size in (None, "auto") else request.size
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
            "prompt": request.prompt, "negative_prompt": request.negative_prompt or "",
            "seed": request.seed if request.seed is not None else secrets.randbits(63),
            "n": request.n, "width": width, "height": height, "steps": steps,
            "guidance_scale": guidance if guidance is not None else float(params.get("default_guidance_scale", 7.5)),
        }

    async def generate(self, request: ImageGenerationRequest, ctx: RequestContext, base_url: str,
                       is_disconnected: Callable[[], Awaitable[bool]]) -> dict:
        request_id = ctx.request_id
        model = await self._model(request.model)
        values = self._values(request, model)
        log.info("images: model=%s n=%d size=%dx%d steps=%d quality=%s style=%s user=%s request=%s",
                 model.name, values["n"], values["width"], values["height"], values["steps"], request.quality,
                 request.style, request.user, request_id)
        call = self.backend.infer(model.name, triton_inputs(values), [OUTPUT], request_id=request_id)
        images = (await cancel_on_disconnect(call, is_disconnected))[OUTPUT]
        pngs = await asyncio.to_thread(lambda: [encode_png(image) for image in images])
        if request.response_format == "b64_json":
            data = [{"b64_json": base64.b64encode(png).decode("ascii")} for png in pngs]
        else:
            root = self.public_url or base_url.rstrip("/")
            data = []
            for i, png in enumerate(pngs):
                self._keep(_image_id(model.name, values, i), png)
                token = self.links.sign({"m": model.name, "v": values, "i": i, "k": ctx.key.name if ctx.key else ""})
                data.append({"url": f"{root}/v1/images/files/{token}"})
        return {"created": int(time.time()), "data": data, "size": f"{values['width']}x{values['height']}",
                "output_format": "png"}

    async def fetch(self, token: str, ctx: RequestContext) -> tuple[bytes, int]:
        """(PNG bytes, seconds the link has left) for a token made by `generate`, admitted as its key."""
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
        model = await self.registry.get(name, TASK)
        images = (await self.backend.infer(model.name, triton_inputs(values), [OUTPUT],
                                           request_id=ctx.request_id))[OUTPUT]
        if not 0 <= index < len(images):
            raise NotFound("No such image", code="image_not_found")
        png = await asyncio.to_thread(encode_png, images[index])
        self._keep(image_id, png)
        return png, left
