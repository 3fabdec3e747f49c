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


class KeyStore:
    """The configured keys. Empty means authentication is off (the app logs a WARNING at start): every
    caller is the anonymous key, and admin is refused to anyone but loopback clients."""

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

    def authorize(self, key: ApiKey, scope: str, from_loopback: bool) -> None:
        """PermissionDenied unless `key` may use `scope`. Without keys configured, admin is for loopback
        clients only: an operator on the host may manage models, the network may not."""
        if not self.enabled and scope == ADMIN and not from_loopback:
            raise PermissionDenied("Admin endpoints need an API key with the `admin` scope, and this server has "
                                   "no API keys configured, so they answer loopback clients only. Configure keys "
                                   "(MODELGATE_API_KEYS_FILE or MODELGATE_API_KEYS; `python -m frontend.auth "
                                   "generate --name ops --scopes admin`) to manage models over the network")
        if scope not in key.scopes and not (scope == METRICS and ADMIN in key.scopes):
            raise PermissionDenied(f"This API key (`{key.name}`) lacks the `{scope}` scope")

    def named(self, name: str) -> ApiKey | None:
        """The key called `name` (the anonymous one when authentication is off); None if it is gone."""
        if not self.enabled:
            return self.anonymous if name == ANONYMOUS else None
        return next((k for k in self.keys if k.name == name), None)

    def describe(self) -> str:
        """One line for the startup log: which mode is active."""
        if not self.enabled:
            return ("AUTHENTICATION IS OFF: no API keys configured (MODELGATE_API_KEYS_FILE, MODELGATE_API_KEYS); "
                    "every client may call the inference endpoints, and admin answers loopback clients only")
        if not self.keys:
            return "API keys on, but the keys file holds no keys: every request that needs a key is refused"
        admins = [k.name for k in self.keys if ADMIN in k.scopes]
        return (f"API keys on: {', '.join(k.name for k in self.keys)}; admin needs the admin scope "
                f"({', '.join(admins) or 'no key has it'})")


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
