"""The image URL guard and fetcher: address checks, allowlist, redirects, limits, content checks.

HTTP cases run against a real server on a loopback port of this machine (allowlisted where a test needs it).
"""

from __future__ import annotations

import base64
import io
import ipaddress
import threading
import time
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
    ImageURLRefused,
    InvalidImage,
    decode_data_uri,
    is_public,
)


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


@pytest.mark.parametrize("address", ["10.1.2.3", "172.16.0.1", "192.168.1.1", "127.0.0.1", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "fe80::1",
                                     "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::"])
def test_non_public_addresses(address):
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses(address):
    assert is_public(ipaddress.ip_address(address))


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


async def test_too_many_pixels():
    uri = "data:image/png;base64," + base64.b64encode(png_bytes((100, 100))).decode()
    with pytest.raises(InvalidImage, match="100x100 pixels"):
        await fetcher(None, max_pixels=5000).load(uri)


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
