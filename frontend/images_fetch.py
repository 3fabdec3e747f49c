"""Images of chat messages (`image_url` content parts) as checked bytes: data URIs, or fetched over http(s).

Fetching a URL the caller chose is a server-side request forgery risk, so: only http and https; the host is
resolved here and *every* address it resolves to must be globally reachable unicast (private, loopback,
link-local, shared, documentation, reserved, multicast and unspecified addresses are refused, and so is every
IPv6 form that carries an IPv4 address: NAT64, 6to4, Teredo, IPv4-compatible, -mapped and -translated) unless
the allowlist setting names it; the connection goes to the address that was checked (the hostname travels in
the Host header and TLS SNI, so a second DNS answer cannot swap it); redirects are followed by hand, each hop
checked the same way; the body is capped while it streams in, the whole fetch has a deadline and the content
type must be `image/*`.

Decoding is the other cost a caller controls, so only PNG, JPEG, WebP, GIF (its first frame) and BMP are
opened (Pillow would open EPS through Ghostscript, and dozens of other formats); each image's size is read
from its header, and one request's images together must fit a pixel budget, before any pixel is decoded;
decoding runs in a small thread pool of the fetcher's own. Every refusal is a 400 whose code and message say
which check failed, and whose `param` names the image.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import httpx
from PIL import Image, UnidentifiedImageError

from frontend.errors import InvalidRequest
from triton_models.contract import IMAGE_FORMATS

log = logging.getLogger(__name__)

SCHEMES = {"http": 80, "https": 443}
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ImageURLRefused(InvalidRequest):
    """The URL may not be fetched (scheme, or an address that is not public and not allowlisted)."""

    code = "image_url_refused"


class ImageFetchFailed(InvalidRequest):
    """The URL could not be fetched (connection, status, timeout, size, content type)."""

    code = "image_fetch_failed"


class InvalidImage(InvalidRequest):
    """The bytes are not an image of an accepted format that decodes."""

    code = "invalid_image"


class ImagePixelsExceeded(InvalidImage):
    """An image, or one request's images together, have more pixels than the limits allow."""

    code = "image_pixels_exceeded"


@dataclass(frozen=True)
class AllowEntry:
    """One allowlist entry: a network (an address is a /32 or /128), and a port when one is given."""

    network: Network
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> AllowEntry:
        """`10.0.0.0/8`, `127.0.0.1:8080`, `192.168.1.5`, `[::1]:9000` or `fd00::/8`."""
        text = text.strip()
        host, port = text, None
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else None
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
            port = int(port_text)
        return cls(ipaddress.ip_network(host, strict=False), port)

    def allows(self, address: Address, port: int) -> bool:
        return address in self.network and (self.port is None or self.port == port)


def _networks(*cidrs: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# IPv6 addresses that carry an IPv4 address and reach it through a translator, a tunnel or the host's own
# stack. Refused whatever they embed (decoding each form is where guards go wrong); allowlist one to use it.
EMBEDDED_IPV4 = {
    "IPv4-mapped": _networks("::ffff:0:0/96"),
    "IPv4-compatible": _networks("::/96"),
    "IPv4-translated": _networks("::ffff:0:0:0/96"),
    "NAT64": _networks("64:ff9b::/96", "64:ff9b:1::/48"),
    "6to4": _networks("2002::/16"),
    "Teredo": _networks("2001::/32"),
}
# Not globally reachable, whether or not this Python's `is_global` knows it yet (3.11's does not know all):
# IETF protocol assignments (Teredo, benchmarking, ORCHID, anycast services), documentation, the 6to4 relay
# anycast, deprecated site-local addresses.
NOT_GLOBAL = _networks("2001::/23", "2001:db8::/32", "3fff::/20", "fec0::/10", "192.88.99.0/24")
GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")  # everything outside it is reserved or special


def refusal(address: Address) -> str | None:
    """Why a fetch may not connect to this address by default, or None when it is public."""
    if address.version == 6:
        for name, networks in EMBEDDED_IPV4.items():
            if any(address in network for network in networks):
                return f"in the {name} range (an IPv6 address that carries an IPv4 address)"
        if address not in GLOBAL_UNICAST_V6:
            return "outside IPv6 global unicast (2000::/3)"
    if not address.is_global or address.is_multicast or any(address in n for n in NOT_GLOBAL):
        return "a private, loopback, link-local, reserved or otherwise non-public address"
    return None


def is_public(address: Address) -> bool:
    return refusal(address) is None


class AddressGuard:
    """Decides which addresses a fetch may connect to: public ones, and the allowlist's."""

    def __init__(self, allowlist: Iterable[str] = ()):
        self.allowlist = [AllowEntry.parse(entry) for entry in allowlist if entry.strip()]

    def refusal(self, address: Address, port: int) -> str | None:
        """Why this address may not be fetched from, or None when it is public or allowlisted."""
        if any(entry.allows(address, port) for entry in self.allowlist):
            return None
        return refusal(address)

    def allowed(self, address: Address, port: int) -> bool:
        return self.refusal(address, port) is None

    async def resolve(self, host: str, port: int) -> Address:
        """The address to connect to; every address the host resolves to must be allowed."""
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError) as exc:
                raise ImageFetchFailed(f"image URL host `{host}` does not resolve: {exc}") from exc
            addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
        if not addresses:
            raise ImageURLRefused(f"image URL host `{host}` resolves to nothing")
        for address in addresses:
            reason = self.refusal(address, port)
            if reason is not None:
                raise ImageURLRefused(f"image URL host `{host}` resolves to {address}, {reason}; refused "
                                      "(the image_url_allowlist setting can name it)")
        return addresses[0]


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 10.0
    max_redirects: int = 3
    max_pixels: int = 50_000_000  # one image
    max_request_pixels: int = 32_000_000  # one request's images together


class ImageFetcher:
    """`load_all(parts)` -> one request's images as bytes, from data URIs or http(s) URLs, checked as the
    module says. Owns the thread pool that reads and decodes images: `close()` it with the app."""

    def __init__(self, guard: AddressGuard, limits: FetchLimits = FetchLimits(), decode_workers: int = 2,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.guard = guard
        self.limits = limits
        self._transport = transport  # tests only
        # Shared by every request, so that image decoding takes at most this many cores whatever comes in.
        self._pool = ThreadPoolExecutor(decode_workers, thread_name_prefix="image-decode")

    @classmethod
    def from_settings(cls, settings) -> ImageFetcher:
        return cls(AddressGuard(settings.image_url_allowlist),
                   FetchLimits(settings.image_max_bytes, settings.image_fetch_timeout_s,
                               settings.image_fetch_max_redirects, settings.image_max_pixels,
                               settings.image_max_request_pixels),
                   decode_workers=settings.image_decode_workers)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def load_all(self, parts: Sequence[tuple[str | None, str]]) -> list[bytes]:
        """The images of one request, `parts` being (param, url) pairs, as bytes in the same order.

        Fetched concurrently and each header read; then the request's pixel budget is checked; only then
        are the images decoded, in the pool. The first refusal cancels the rest (queued decodes included).
        """
        sized = await _first_failure_cancels(self._fetch_and_measure(url, param) for param, url in parts)
        total = sum(pixels for _, pixels in sized)
        if total > self.limits.max_request_pixels:
            running = 0
            for (param, _), (_, pixels) in zip(parts, sized):
                running += pixels
                if running > self.limits.max_request_pixels:  # the image that goes over names the error
                    raise ImagePixelsExceeded(
                        f"the request's images have {total} pixels together (width x height, all images), "
                        f"over the {self.limits.max_request_pixels} pixel budget of one request", param=param)
        await _first_failure_cancels(self._in_pool(param, decode_image, data)
                                     for (param, _), (data, _) in zip(parts, sized))
        return [data for data, _ in sized]

    async def load(self, url: str, param: str | None = None) -> bytes:
        """One image, as a request of one image."""
        return (await self.load_all([(param, url)]))[0]

    async def _fetch_and_measure(self, url: str, param: str | None) -> tuple[bytes, int]:
        try:
            if url.startswith("data:"):
                data = decode_data_uri(url, self.limits.max_bytes)
            else:
                data = await self.fetch(url)
        except InvalidRequest as exc:
            exc.param = exc.param or param
            raise
        return data, await self._in_pool(param, image_pixels, data, self.limits.max_pixels)

    async def _in_pool(self, param: str | None, function, *args):
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)
        except InvalidRequest as exc:
            exc.param = exc.param or param
            raise

    async def fetch(self, url: str) -> bytes:
        try:
            return await asyncio.wait_for(self._follow(url), self.limits.timeout_s)
        except asyncio.TimeoutError:
            raise ImageFetchFailed(f"fetching the image URL took over {self.limits.timeout_s:g} s") from None

    async def _follow(self, url: str) -> bytes:
        target = _parse_url(url)
        async with httpx.AsyncClient(transport=self._transport, follow_redirects=False, trust_env=False,
                                     timeout=self.limits.timeout_s) as client:
            for _ in range(self.limits.max_redirects + 1):
                address = await self.guard.resolve(target.host, target.port or SCHEMES[target.scheme])
                request = _pinned_request(client, target, address)
                try:
                    response = await client.send(request, stream=True)
                except httpx.HTTPError as exc:
                    raise ImageFetchFailed(f"fetching the image URL failed: {type(exc).__name__}: {exc}") from exc
                try:
                    if response.is_redirect:
                        target = _parse_url(str(target.join(response.headers.get("location", ""))))
                        continue
                    return await self._body(response)
                finally:
                    await response.aclose()
        raise ImageFetchFailed(f"the image URL redirects more than {self.limits.max_redirects} times")

    async def _body(self, response: httpx.Response) -> bytes:
        if response.status_code != 200:
            raise ImageFetchFailed(f"the image URL answered HTTP {response.status_code}")
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if not content_type.startswith("image/"):
            raise ImageFetchFailed(f"the image URL's content type is `{content_type or 'missing'}`, not image/*")
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.limits.max_bytes:
            raise ImageFetchFailed(f"the image is {declared} bytes, over the {self.limits.max_bytes} byte limit")
        chunks, size = [], 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.limits.max_bytes:
                    raise ImageFetchFailed(f"the image is over the {self.limits.max_bytes} byte limit")
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise ImageFetchFailed(f"reading the image failed: {type(exc).__name__}: {exc}") from exc
        return b"".join(chunks)


def _parse_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ImageURLRefused(f"the image URL is not valid: {exc}") from exc
    if parsed.scheme not in SCHEMES or not parsed.host:
        raise ImageURLRefused(f"image URLs must be http, https or data URIs, not `{parsed.scheme or url[:16]}`")
    return parsed


def _pinned_request(client: httpx.AsyncClient, target: httpx.URL, address: Address) -> httpx.Request:
    """A GET to the checked address, the original host in the Host header and (https) in TLS SNI."""
    host_header = target.host if target.port is None else f"{target.host}:{target.port}"
    if ":" in target.host:  # an IPv6 literal
        host_header = f"[{target.host}]" if target.port is None else f"[{target.host}]:{target.port}"
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return client.build_request("GET", target.copy_with(host=str(address)),
                                headers={"Host": host_header, "Accept": "image/*"}, extensions=extensions)


def decode_data_uri(url: str, max_bytes: int) -> bytes:
    """`data:image/png;base64,...` (or percent-encoded) -> bytes."""
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise InvalidImage("the image data URI has no `,` before its data")
    fields = header.split(";")
    media_type = fields[0].strip().lower()
    if media_type and not media_type.startswith("image/"):
        raise InvalidImage(f"the image data URI's media type is `{media_type}`, not image/*")
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise InvalidImage(f"the image is over the {max_bytes} byte limit")
    if "base64" in (f.strip().lower() for f in fields[1:]):
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidImage(f"the image data URI is not valid base64: {exc}") from exc
    return unquote_to_bytes(payload)


async def _first_failure_cancels(awaitables: Iterable[Awaitable]) -> list:
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()


# Pillow's names, shared with the LLaVA model. GIF: Pillow loads the first frame unless asked for another.
FORMATS = IMAGE_FORMATS
ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def _open(data: bytes) -> Image.Image:
    """The image with its header read and no pixel decoded; only the accepted formats are tried."""
    try:
        return Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:  # Pillow's own ceiling (2 x MAX_IMAGE_PIXELS), from the size
        raise ImagePixelsExceeded(f"the image has too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        message = "the image cannot be decoded as PNG, JPEG, WebP, GIF or BMP, the formats accepted"
        raise InvalidImage(message) from exc
    except ERRORS as exc:
        raise InvalidImage(f"the image cannot be decoded: {exc}") from exc


def image_pixels(data: bytes, max_pixels: int) -> int:
    """Width x height from the image's header, refused over `max_pixels`; nothing is decoded."""
    with _open(data) as image:
        width, height = image.size
    if width * height > max_pixels:
        raise ImagePixelsExceeded(f"the image has {width}x{height} pixels, over the {max_pixels} pixel limit "
                                  "of one image")
    return width * height


def decode_image(data: bytes) -> None:
    """Raise InvalidImage unless the image decodes (its first frame, for an animation)."""
    with _open(data) as image:
        try:
            image.load()
        except ERRORS as exc:
            raise InvalidImage(f"the image cannot be decoded: {exc}") from exc
