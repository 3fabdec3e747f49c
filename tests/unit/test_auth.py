"""frontend.auth: keys file and env keys, bearer auth, scopes per path, the hash/generate CLI."""

import json

import pytest

from frontend.auth import ADMIN, INFERENCE, METRICS, KeyStore, Limits, hash_key, main
from frontend.errors import AuthenticationError, PermissionDenied


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [
        {"name": "team-a", "key_sha256": hash_key("sk-a"), "scopes": ["inference"],
         "limits": {"requests_per_minute": 5}},
        {"name": "ops", "key_sha256": hash_key("sk-ops").upper(), "scopes": ["admin"]},
    ]}))
    return path


def test_file_keys_authenticate_by_hash_with_their_scopes_and_limits(keys_file):
    store = KeyStore.load(str(keys_file), default_limits=Limits(tokens_per_minute=100))
    team = store.authenticate("Bearer sk-a")
    assert team.name == "team-a" and team.scopes == {INFERENCE}
    assert team.limits == Limits(requests_per_minute=5, tokens_per_minute=100)  # unset: the defaults
    assert store.authenticate("bearer  sk-ops").name == "ops"
    assert "sk-a" not in repr(team) and hash_key("sk-a") not in repr(team)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer sk-wrong", "Basic sk-a", "sk-a"])
def test_missing_or_wrong_keys_are_401(keys_file, header):
    with pytest.raises(AuthenticationError) as info:
        KeyStore.load(str(keys_file)).authenticate(header)
    assert info.value.status == 401 and info.value.code == "invalid_api_key"


def test_a_list_file_and_env_keys_combine(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([{"name": "a", "key_sha256": hash_key("k1")}]))
    store = KeyStore.load(str(path), f"k2, named=k3, hashed=sha256:{hash_key('k4')}")
    assert [store.authenticate(f"Bearer {k}").name for k in ("k1", "k2", "k3", "k4")] == ["a", "env-0", "named",
                                                                                         "hashed"]
    assert store.authenticate("Bearer k1").scopes == {INFERENCE}  # the file's default scope
    assert store.authenticate("Bearer k2").scopes == {INFERENCE, ADMIN, METRICS}


def test_no_keys_means_auth_off():
    store = KeyStore.load()
    assert not store.enabled and store.authenticate(None).name == "anonymous"


def test_an_empty_keys_file_refuses_everyone(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text('{"keys": []}')  # the Helm chart's default Secret
    store = KeyStore.load(str(path))
    assert store.enabled
    with pytest.raises(AuthenticationError):
        store.authenticate(None)


@pytest.mark.parametrize("entry, message", [
    ({"name": "a", "key_sha256": "abc"}, "64 hex"),
    ({"name": "a", "key": "sk-plain", "key_sha256": hash_key("x")}, "never the key"),
    ({"name": "a", "key_sha256": hash_key("x"), "scopes": ["root"]}, "unknown scopes"),
    ({"name": "a", "key_sha256": hash_key("x"), "limits": {"rpm": 1}}, "unknown limits"),
    ({"key_sha256": hash_key("x")}, "name"),
])
def test_bad_entries_are_refused_at_start(tmp_path, entry, message):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([entry]))
    with pytest.raises(ValueError, match=message):
        KeyStore.load(str(path))


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="unique"):
        KeyStore.load(env_keys="a=k1,a=k2")


def test_authorize_by_scope_admin_may_scrape_metrics(keys_file):
    store = KeyStore.load(str(keys_file))
    team, ops = store.authenticate("Bearer sk-a"), store.authenticate("Bearer sk-ops")
    store.authorize(team, INFERENCE, from_loopback=False)
    store.authorize(ops, METRICS, from_loopback=False)
    store.authorize(ops, ADMIN, from_loopback=False)  # with keys, the scope decides, wherever the caller is
    for key, scope in ((team, ADMIN), (ops, INFERENCE), (team, METRICS)):
        with pytest.raises(PermissionDenied):
            store.authorize(key, scope, from_loopback=True)


def test_without_keys_admin_answers_loopback_only():
    store = KeyStore.load()
    anonymous = store.authenticate(None)
    store.authorize(anonymous, INFERENCE, from_loopback=False)
    store.authorize(anonymous, ADMIN, from_loopback=True)
    with pytest.raises(PermissionDenied, match="MODELGATE_API_KEYS_FILE") as info:
        store.authorize(anonymous, ADMIN, from_loopback=False)
    assert info.value.status == 403
    assert "loopback clients only" in store.describe()


def test_named_keys_for_signed_links(keys_file):
    store = KeyStore.load(str(keys_file))
    assert store.named("ops").name == "ops" and store.named("gone") is None
    off = KeyStore.load()
    assert off.named("anonymous") is off.anonymous and off.named("ops") is None


def test_cli_hash_and_generate(capsys, tmp_path):
    assert main(["hash", "sk-test"]) == 0
    assert capsys.readouterr().out.strip() == hash_key("sk-test")
    assert main(["generate", "--name", "svc", "--scopes", "inference,metrics", "--requests-per-minute", "9"]) == 0
    key, entry = capsys.readouterr().out.strip().split("\n")
    entry = json.loads(entry)
    assert key.startswith("sk-mg-") and entry["key_sha256"] == hash_key(key)
    assert entry["limits"] == {"requests_per_minute": 9} and entry["scopes"] == ["inference", "metrics"]
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([entry]))  # what it prints is a valid keys-file entry
    assert KeyStore.load(str(path)).authenticate(f"Bearer {key}").name == "svc"
