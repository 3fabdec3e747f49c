"""The image URL guard and fetcher: address checks, allowlist, redirects, limits, formats, pixel budget.

HTTP cases run against a real server on a loopback port of this machine (allowlisted where a test needs it).
"""

from __future__ import annotations

import base64
import io
import ipaddress
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from PIL import Image

from frontend.images_fetch import (
    AddressGuard,
    AllowEntry,
    FetchLimits,
    ImageFetcher,
    ImageFetchFailed,
    ImagePixelsExceeded,
    ImageURLRefused,
    InvalidImage,
    decode_data_uri,
    is_public,
    refusal,
)
from frontend.settings import Settings


def png_bytes(size=(8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = png_bytes()


class Handler(BaseHTTPRequestHandler):
    """/png, /html, /broken, /big, /slow, /redirect?to=URL, /redirect-loop, /missing; records Host headers."""

    hosts: ClassVar[list[str]] = []

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        Handler.hosts.append(self.headers.get("Host", ""))
        path, _, query = self.path.partition("?")
        if path == "/png":
            self.reply(200, "image/png", PNG)
        elif path == "/html":
            self.reply(200, "text/html", b"<html></html>")
        elif path == "/broken":
            self.reply(200, "image/png", b"\x89PNG but not really")
        elif path == "/big":
            self.reply(200, "image/png", PNG + b"\0" * 5000)
        elif path == "/big-undeclared":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(PNG + b"\0" * 5000)  # no Content-Length: read until the connection closes
            self.close_connection = True
        elif path == "/slow":
            time.sleep(1.0)
            self.reply(200, "image/png", PNG)
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query.removeprefix("to="))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/redirect-loop":
            self.send_response(302)
            self.send_header("Location", "/redirect-loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.reply(404, "text/plain", b"no")

    def reply(self, status: int, content_type: str, body: bytes):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def fetcher(port: int | None, **limits) -> ImageFetcher:
    allow = [f"127.0.0.1:{port}"] if port else []
    return ImageFetcher(AddressGuard(allow), FetchLimits(**{"max_bytes": 4096, "timeout_s": 5.0, **limits}))


# One case per range; the addresses that embed IPv4 are refused whatever IPv4 address they carry.
NON_PUBLIC = {
    "private 10/8": "10.1.2.3", "private 172.16/12": "172.16.0.1", "private 192.168/16": "192.168.1.1",
    "loopback": "127.0.0.1", "link-local (cloud metadata)": "169.254.169.254",
    "shared 100.64/10": "100.64.0.1",
    "this network": "0.0.0.0", "multicast": "224.0.0.1", "broadcast": "255.255.255.255",
    "IETF protocol 192.0.0/24": "192.0.0.1", "documentation 192.0.2/24": "192.0.2.1",
    "benchmarking 198.18/15": "198.18.0.1", "documentation 198.51.100/24": "198.51.100.1",
    "documentation 203.0.113/24": "203.0.113.1", "reserved 240/4": "240.0.0.1",
    "6to4 relay anycast 192.88.99/24": "192.88.99.1",
    "v6 loopback": "::1", "v6 unspecified": "::", "v6 link-local": "fe80::1", "v6 unique local": "fc00::1",
    "v6 unique local fd": "fd12:3456::1", "v6 site-local (deprecated)": "fec0::1", "v6 multicast": "ff0e::1",
    "v6 discard-only": "100::1", "v6 documentation 2001:db8": "2001:db8::1",
    "v6 documentation 3fff": "3fff::1",
    "v6 benchmarking": "2001:2::1", "v6 ORCHIDv2": "2001:20::1", "v6 SRv6 SIDs": "5f00::1",
    "v6 unassigned": "4000::1",
    "IPv4-mapped loopback": "::ffff:127.0.0.1", "IPv4-mapped private": "::ffff:10.0.0.1",
    "IPv4-mapped public": "::ffff:8.8.8.8",
    "IPv4-compatible loopback": "::7f00:1", "IPv4-compatible public": "::808:808",
    "IPv4-translated": "::ffff:0:a00:1",
    "NAT64 private": "64:ff9b::a00:1", "NAT64 public": "64:ff9b::808:808",
    "NAT64 local-use": "64:ff9b:1::a00:1",
    "6to4 private": "2002:a00:1::", "6to4 public": "2002:808:808::1",
    "Teredo": "2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo short": "2001::1",
}


@pytest.mark.parametrize("address", NON_PUBLIC.values(), ids=NON_PUBLIC.keys())
def test_non_public_addresses(address):
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(("address", "name"), [
    ("64:ff9b::a00:1", "NAT64"), ("64:ff9b:1::a00:1", "NAT64"), ("::7f00:1", "IPv4-compatible"),
    ("2002:a00:1::", "6to4"), ("2001::a00:1", "Teredo"), ("::ffff:127.0.0.1", "IPv4-mapped"),
])
def test_the_refusal_names_the_transition_range(address, name):
    assert f"in the {name} range" in refusal(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111",
                                     "2001:4860:4860::8888", "2a00:1450:4001::1"])
def test_public_addresses(address):
    assert is_public(ipaddress.ip_address(address))


def test_the_allowlist_can_name_a_transition_range():
    nat64 = ipaddress.ip_address("64:ff9b::a00:1")
    assert not AddressGuard().allowed(nat64, 80)
    assert AddressGuard(["64:ff9b::/96"]).allowed(nat64, 80)


@pytest.mark.parametrize(("entry", "address", "port", "allowed"), [
    ("127.0.0.1:8080", "127.0.0.1", 8080, True),
    ("127.0.0.1:8080", "127.0.0.1", 8081, False),
    ("10.0.0.0/8", "10.20.30.40", 443, True),
    ("10.0.0.0/8", "11.0.0.1", 443, False),
    ("[::1]:9000", "::1", 9000, True),
    ("fd00::/8", "fd12::5", 80, True),
    ("192.168.1.5", "192.168.1.5", 1, True),
])
def test_allowlist_entries(entry, address, port, allowed):
    assert AllowEntry.parse(entry).allows(ipaddress.ip_address(address), port) is allowed


async def test_every_resolved_address_is_checked():
    guard = AddressGuard()
    with pytest.raises(ImageURLRefused, match="`localhost` resolves to"):
        await guard.resolve("localhost", 80)
    assert str(await AddressGuard(["127.0.0.0/8", "::1"]).resolve("localhost", 80)) in {"127.0.0.1", "::1"}


async def test_allowlisted_loopback_port_is_fetched_with_the_hosts_name(server):
    Handler.hosts.clear()
    data = await fetcher(server).load(f"http://127.0.0.1:{server}/png")
    assert data == PNG
    assert Handler.hosts == [f"127.0.0.1:{server}"]


async def test_loopback_is_refused_without_the_allowlist(server):
    with pytest.raises(ImageURLRefused, match="127.0.0.1"):
        await fetcher(None).load(f"http://127.0.0.1:{server}/png")


async def test_a_redirect_to_a_refused_address_is_not_followed(server):
    other = f"http://127.0.0.2:{server}/png"  # same server, an address the allowlist does not name
    with pytest.raises(ImageURLRefused, match="127.0.0.2"):
        await fetcher(server).load(f"http://127.0.0.1:{server}/redirect?to={other}")
    assert await fetcher(server).load(f"http://127.0.0.1:{server}/redirect?to=/png") == PNG


@pytest.mark.parametrize(("path", "error", "message"), [
    ("/html", ImageFetchFailed, "content type is `text/html`"),
    ("/broken", InvalidImage, "cannot be decoded"),
    ("/big", ImageFetchFailed, "over the 4096 byte limit"),
    ("/big-undeclared", ImageFetchFailed, "over the 4096 byte limit"),
    ("/missing", ImageFetchFailed, "HTTP 404"),
    ("/redirect-loop", ImageFetchFailed, "redirects more than 3 times"),
])
async def test_fetch_refusals(server, path, error, message):
    with pytest.raises(error, match=message) as caught:
        await fetcher(server).load(f"http://127.0.0.1:{server}{path}", param="messages[0].content[0].image_url")
    assert caught.value.param == "messages[0].content[0].image_url"
    assert caught.value.status == 400


async def test_a_slow_server_times_out(server):
    with pytest.raises(ImageFetchFailed, match="took over 0.3 s"):
        await fetcher(server, timeout_s=0.3).load(f"http://127.0.0.1:{server}/slow")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://x", "http://"])
async def test_only_http_https_and_data(url):
    with pytest.raises(ImageURLRefused):
        await fetcher(None).load(url)


async def test_data_uris():
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert await fetcher(None).load(uri) == PNG
    with pytest.raises(InvalidImage, match="not image/"):
        decode_data_uri("data:text/plain;base64,aGk=", 100)
    with pytest.raises(InvalidImage, match="not valid base64"):
        decode_data_uri("data:image/png;base64,@@@", 100)
    with pytest.raises(InvalidImage, match="cannot be decoded"):
        await fetcher(None).load("data:image/png;base64," + base64.b64encode(b"nope").decode())
    with pytest.raises(InvalidImage, match="byte limit"):
        await fetcher(None, max_bytes=10).load(uri)


async def test_a_hostname_connects_to_the_checked_address_and_keeps_its_name(server):
    import socket

    if {info[4][0] for info in socket.getaddrinfo("localhost", server, type=socket.SOCK_STREAM)} != {"127.0.0.1"}:
        pytest.skip("localhost resolves to more than 127.0.0.1 here")
    Handler.hosts.clear()
    assert await fetcher(server).load(f"http://localhost:{server}/png") == PNG
    assert Handler.hosts == [f"localhost:{server}"]


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """An HTTPS server on 127.0.0.1 whose certificate names `images.test`; records the SNI it is sent."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=images.test", "-addext", "subjectAltName=DNS:images.test"],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    context.sni_callback = lambda _socket, name, _context: names.append(name)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], cert, names
    httpd.shutdown()
    httpd.server_close()


def fake_dns(monkeypatch, answers: dict[str, list[str]]):
    """`socket.getaddrinfo` answering these names (as a DNS server would); other names as before."""
    import socket

    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                    for a in answers[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


async def test_https_connects_to_the_checked_address_with_the_hostnames_sni_and_certificate(tls_server, monkeypatch):
    import ssl

    import httpx

    port, cert, names = tls_server
    fake_dns(monkeypatch, {"images.test": ["127.0.0.1"]})
    transport = httpx.AsyncHTTPTransport(verify=ssl.create_default_context(cafile=str(cert)))
    pinned = ImageFetcher(AddressGuard([f"127.0.0.1:{port}"]), FetchLimits(max_bytes=4096), transport=transport)
    Handler.hosts.clear()
    assert await pinned.load(f"https://images.test:{port}/png") == PNG
    assert names[-1] == "images.test" and Handler.hosts == [f"images.test:{port}"]


async def test_one_private_address_among_public_ones_refuses_the_host(monkeypatch):
    fake_dns(monkeypatch, {"mixed.test": ["93.184.216.34", "10.0.0.7"]})
    with pytest.raises(ImageURLRefused, match="resolves to 10.0.0.7"):
        await fetcher(None).load("http://mixed.test/cat.png")


@pytest.mark.parametrize("answer", ["64:ff9b::7f00:1", "2002:7f00:1::1", "::7f00:1", "2001::7f00:1"])
async def test_a_name_resolving_to_an_address_that_embeds_ipv4_is_refused(monkeypatch, answer):
    fake_dns(monkeypatch, {"tunnel.test": [answer]})
    with pytest.raises(ImageURLRefused, match=f"resolves to {answer}, in the .* range"):
        await AddressGuard().resolve("tunnel.test", 80)


def encoded(format: str, size=(8, 6), **options) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 10)).save(buffer, format=format, **options)
    return buffer.getvalue()


def uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


@pytest.mark.parametrize("format", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
async def test_accepted_formats(format):
    data = encoded(format)
    assert await fetcher(None).load(uri(data)) == data


@pytest.mark.parametrize("format", ["EPS", "TIFF", "ICO", "PPM", "TGA", "PCX", "SGI"])
async def test_other_formats_are_refused_unopened(format):
    with pytest.raises(InvalidImage, match="cannot be decoded as PNG, JPEG, WebP, GIF or BMP") as caught:
        await fetcher(None).load(uri(encoded(format)), param="messages[0].content[0].image_url")
    assert caught.value.code == "invalid_image" and caught.value.param == "messages[0].content[0].image_url"


async def test_an_animated_gif_is_accepted_whole():
    frames = [Image.new("RGB", (8, 6), color) for color in ("red", "green", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(io.BytesIO(buffer.getvalue())).n_frames == 3
    assert await fetcher(None).load(uri(buffer.getvalue())) == buffer.getvalue()  # bytes pass on unchanged


def grey_png(width: int, height: int, rows: bytes | None = None) -> bytes:
    """A greyscale PNG of zeros, built with zlib (small on the wire at any size); `rows` replaces its data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    if rows is None:
        rows = zlib.compress(b"\0" * ((width + 1) * height), 9)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


async def test_too_many_pixels_in_one_image():
    with pytest.raises(ImagePixelsExceeded, match="100x100 pixels, over the 5000 pixel limit") as caught:
        await fetcher(None, max_pixels=5000).load(uri(png_bytes((100, 100))), param="p")
    assert (caught.value.code, caught.value.status, caught.value.param) == ("image_pixels_exceeded", 400, "p")


async def test_the_request_pixel_budget_counts_every_image():
    parts = [(f"messages[0].content[{i}].image_url", uri(png_bytes((50, 50)))) for i in range(3)]  # 2,500 px
    assert len(await fetcher(None, max_request_pixels=7500).load_all(parts)) == 3
    with pytest.raises(ImagePixelsExceeded, match="7500 pixels together.*over the 6000") as caught:
        await fetcher(None, max_request_pixels=6000).load_all(parts)
    assert caught.value.param == "messages[0].content[2].image_url"  # the image that went over


async def test_the_budget_is_checked_from_the_headers_before_any_pixel_is_decoded():
    damaged = uri(grey_png(100, 100, rows=b"not zlib data"))  # a sound header over undecodable data
    with pytest.raises(InvalidImage, match="cannot be decoded"):
        await fetcher(None).load_all([("a", damaged)])
    with pytest.raises(ImagePixelsExceeded):  # a decode-first check would fail on the data instead
        await fetcher(None, max_request_pixels=15_000).load_all([("a", damaged), ("b", damaged)])


async def test_a_huge_request_is_refused_in_milliseconds():
    huge = uri(grey_png(7000, 7000))
    assert len(huge) < 100_000
    start = time.perf_counter()
    with pytest.raises(ImagePixelsExceeded, match="196000000 pixels together"):
        await fetcher(None, max_bytes=1 << 20, max_request_pixels=32_000_000).load_all([("p", huge)] * 4)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("workers", [1, 3])
async def test_images_are_decoded_in_a_bounded_pool_of_the_settings_size(monkeypatch, workers):
    import frontend.images_fetch as module

    running, most, threads = 0, 0, set()
    lock = threading.Lock()
    real = module.decode_image

    def decode(data: bytes) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            threads.add(threading.current_thread().name)
        time.sleep(0.05)
        real(data)
        with lock:
            running -= 1

    monkeypatch.setattr(module, "decode_image", decode)
    loader = ImageFetcher.from_settings(Settings(image_decode_workers=workers))
    await loader.load_all([(str(i), uri(PNG)) for i in range(8)])
    assert most == workers and all(name.startswith("image-decode") for name in threads)
    loader.close()


def test_from_settings_reads_the_image_limits():
    settings = Settings(image_max_request_pixels=1234, image_max_pixels=999, image_max_bytes=77,
                        image_url_allowlist=["10.0.0.0/8"])
    loader = ImageFetcher.from_settings(settings)
    limits = loader.limits
    assert (limits.max_request_pixels, limits.max_pixels, limits.max_bytes) == (1234, 999, 77)
    assert loader.guard.allowed(ipaddress.ip_address("10.1.1.1"), 80)
    loader.close()


async def test_the_first_refusal_cancels_the_other_fetches(server):
    start = time.perf_counter()
    with pytest.raises(InvalidImage, match="cannot be decoded") as caught:
        await fetcher(server).load_all([("slow", f"http://127.0.0.1:{server}/slow"),
                                        ("bad", uri(b"nope"))])
    assert caught.value.param == "bad" and time.perf_counter() - start < 0.5


async def test_no_images():
    assert await fetcher(None).load_all([]) == []
