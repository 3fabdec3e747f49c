"""Images of chat messages (`image_url` content parts) as checked bytes: data URIs, or fetched over http(s).

Fetching a URL the caller chose is a server-side request forgery risk, so: only http and https; the host is
resolved here and *every* address it resolves to must be public (private, loopback, link-local, shared,
reserved, multicast and unspecified addresses are refused) unless the allowlist setting names it; the
connection goes to the address that was checked (the hostname travels in the Host header and TLS SNI, so a
second DNS answer cannot swap it); redirects are followed by hand, each hop checked the same way; the body
is capped while it streams in, the whole fetch has a deadline, the content type must be `image/*` and the
bytes must decode with Pillow. Every refusal is a 400 whose code and message say which check failed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import logging
import socket
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import httpx
from PIL import Image

from frontend.errors import InvalidRequest

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
    """The bytes are not an image Pillow can decode."""

    code = "invalid_image"


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


def is_public(address: Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
        address = mapped
    return address.is_global and not address.is_multicast


class AddressGuard:
    """Decides which addresses a fetch may connect to: public ones, and the allowlist's."""

    def __init__(self, allowlist: Iterable[str] = ()):
        self.allowlist = [AllowEntry.parse(entry) for entry in allowlist if entry.strip()]

    def allowed(self, address: Address, port: int) -> bool:
        return is_public(address) or any(entry.allows(address, port) for entry in self.allowlist)

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
        refused = [a for a in addresses if not self.allowed(a, port)]
        if refused or not addresses:
            raise ImageURLRefused(f"image URL host `{host}` resolves to {refused[0] if refused else 'nothing'}, "
                                  "a private, loopback, link-local or otherwise non-public address; refused")
        return addresses[0]


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 10.0
    max_redirects: int = 3
    max_pixels: int = 50_000_000


class ImageFetcher:
    """`load(url)` -> image bytes, from a data URI or an http(s) URL, checked as the module says."""

    def __init__(self, guard: AddressGuard, limits: FetchLimits = FetchLimits(),
                 transport: httpx.AsyncBaseTransport | None = None):
        self.guard = guard
        self.limits = limits
        self._transport = transport  # tests only

    @classmethod
    def from_settings(cls, settings) -> ImageFetcher:
        return cls(AddressGuard(settings.image_url_allowlist),
                   FetchLimits(settings.image_max_bytes, settings.image_fetch_timeout_s,
                               settings.image_fetch_max_redirects, settings.image_max_pixels))

    async def load(self, url: str, param: str | None = None) -> bytes:
        try:
            if url.startswith("data:"):
                data = decode_data_uri(url, self.limits.max_bytes)
            else:
                data = await self.fetch(url)
            await asyncio.to_thread(check_image, data, self.limits.max_pixels)
        except InvalidRequest as exc:
            exc.param = exc.param or param
            raise
        return data

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


def check_image(data: bytes, max_pixels: int) -> None:
    """Raise InvalidImage unless Pillow decodes the bytes (size checked before the pixels are decoded)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > max_pixels:
                    raise InvalidImage(f"the image has {image.width}x{image.height} pixels, over {max_pixels}")
                image.load()
    except InvalidImage:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(f"the image cannot be decoded: {exc}") from exc
