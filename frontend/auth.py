"""API keys: SHA-256 hashes from a keys file and/or MODELGATE_API_KEYS, bearer auth, scopes per route.

Only hashes are kept in memory; a presented key is hashed and compared with `hmac.compare_digest` against
every stored hash. Keys are never logged (a key's *name* is).

Keys file (MODELGATE_API_KEYS_FILE), a JSON list or `{"keys": [...]}` (the Helm chart's shape):

    [{"name": "team-a", "key_sha256": "<64 hex>", "scopes": ["inference"],
      "limits": {"requests_per_minute": 60, "tokens_per_minute": 100000, "max_concurrent": 4}}]

CLI: `python -m frontend.auth hash <key>` prints a key's hash; `python -m frontend.auth generate --name N`
prints a new key and the keys-file entry for it.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

from frontend.errors import AuthenticationError, PermissionDenied

INFERENCE, ADMIN, METRICS = "inference", "admin", "metrics"
SCOPES = (INFERENCE, ADMIN, METRICS)
KEY_PREFIX = "sk-mg-"
ANONYMOUS = "anonymous"

# Paths anyone may call: probes, API docs, and signed image URLs (the signature is their credential).
OPEN_PREFIXES = ("/health", "/docs", "/redoc", "/openapi.json", "/v1/images/files/")
METRICS_PATHS = ("/metrics", "/admin/metrics")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Limits:
    """Per-key limits; 0 means unlimited."""

    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    max_concurrent: int = 0

    @classmethod
    def parse(cls, data: dict | None, default: Limits) -> Limits:
        data = data or {}
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown limits {sorted(unknown)}")
        values = {k: int(data.get(k, getattr(default, k))) for k in cls.__dataclass_fields__}
        if any(v < 0 for v in values.values()):
            raise ValueError("limits must be >= 0")
        return cls(**values)


@dataclass(frozen=True)
class ApiKey:
    """Who is calling: a key's name, its scopes and limits (never the key itself)."""

    name: str
    key_sha256: str = field(repr=False)
    scopes: frozenset[str]
    limits: Limits


def required_scope(path: str, metrics_public: bool) -> str | None:
    """The scope a path needs; None for open paths."""
    if path in METRICS_PATHS:
        return None if metrics_public else METRICS
    if path.startswith(OPEN_PREFIXES):
        return None
    if path == "/admin" or path.startswith("/admin/"):
        return ADMIN
    return INFERENCE


class KeyStore:
    """The configured keys. Empty means authentication is off (the app logs a WARNING at start)."""

    def __init__(self, keys: list[ApiKey], default_limits: Limits = Limits(), from_file: bool = False):
        names = [k.name for k in keys]
        if len(set(names)) != len(names):
            raise ValueError("API key names must be unique")
        self.keys = keys
        self.anonymous = ApiKey(ANONYMOUS, "", frozenset(SCOPES), default_limits)
        # A keys file, even an empty one, means auth was meant: an empty one refuses everyone (fail closed).
        self.enabled = bool(keys) or from_file

    @classmethod
    def load(cls, file: str = "", env_keys: str = "", default_limits: Limits = Limits()) -> KeyStore:
        keys = []
        if file:
            data = json.loads(Path(file).read_text())
            entries = data.get("keys", []) if isinstance(data, dict) else data
            for i, entry in enumerate(entries):
                try:
                    keys.append(_entry(entry, default_limits))
                except (KeyError, TypeError, ValueError) as exc:
                    raise ValueError(f"{file}: key entry {i}: {exc}") from None
        for i, item in enumerate(v.strip() for v in env_keys.split(",") if v.strip()):
            name, sep, key = item.partition("=")
            name, key = (name, key) if sep else (f"env-{i}", name)
            digest = key.removeprefix("sha256:") if key.startswith("sha256:") else hash_key(key)
            keys.append(ApiKey(name, _check_hash(digest), frozenset(SCOPES), default_limits))
        return cls(keys, default_limits, from_file=bool(file))

    def authenticate(self, authorization: str | None) -> ApiKey:
        """The key behind an `Authorization: Bearer <key>` header; AuthenticationError otherwise."""
        if not self.enabled:
            return self.anonymous
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("Missing API key: send `Authorization: Bearer <key>`")
        digest = hash_key(token)
        found = None
        for key in self.keys:  # no early exit: every comparison runs
            if hmac.compare_digest(digest, key.key_sha256):
                found = key
        if found is None:
            raise AuthenticationError("Incorrect API key provided")
        return found

    def authorize(self, key: ApiKey, scope: str | None) -> None:
        if scope is not None and scope not in key.scopes and not (scope == METRICS and ADMIN in key.scopes):
            raise PermissionDenied(f"This API key (`{key.name}`) lacks the `{scope}` scope")


def _check_hash(digest: str) -> str:
    digest = digest.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("key_sha256 must be 64 hex digits (python -m frontend.auth hash <key>)")
    return digest


def _entry(entry: dict, default_limits: Limits) -> ApiKey:
    scopes = frozenset(entry.get("scopes", [INFERENCE]))
    if not scopes <= set(SCOPES):
        raise ValueError(f"unknown scopes {sorted(scopes - set(SCOPES))}")
    if "key" in entry:
        raise ValueError("store `key_sha256`, never the key itself")
    return ApiKey(str(entry["name"]), _check_hash(entry["key_sha256"]), scopes,
                  Limits.parse(entry.get("limits"), default_limits))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m frontend.auth", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("hash", help="print the SHA-256 of a key").add_argument("key")
    gen = sub.add_parser("generate", help="print a new key and its keys-file entry")
    gen.add_argument("--name", required=True)
    gen.add_argument("--scopes", default=INFERENCE, help="comma-separated: inference, admin, metrics")
    gen.add_argument("--requests-per-minute", type=int, default=0)
    gen.add_argument("--tokens-per-minute", type=int, default=0)
    gen.add_argument("--max-concurrent", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "hash":
        print(hash_key(args.key))
        return 0
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    limits = {k: v for k, v in (("requests_per_minute", args.requests_per_minute),
                                ("tokens_per_minute", args.tokens_per_minute),
                                ("max_concurrent", args.max_concurrent)) if v}
    entry = {"name": args.name, "key_sha256": hash_key(key), "scopes": args.scopes.split(","), "limits": limits}
    _entry(entry, Limits())  # validate before printing
    print(key)
    print(json.dumps(entry))
    return 0


if __name__ == "__main__":
    sys.exit(main())
