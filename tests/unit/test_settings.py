from frontend.settings import Settings


def test_env_prefix_and_lists(monkeypatch):
    monkeypatch.setenv("MODELGATE_TRITON_GRPC_URL", "dns:///triton:8001")
    monkeypatch.setenv("MODELGATE_REQUIRED_MODELS", "a, b,,c")
    monkeypatch.setenv("MODELGATE_PORT", "9000")
    s = Settings()
    assert s.triton_grpc_url == "dns:///triton:8001" and s.port == 9000
    assert s.required_models == ["a", "b", "c"]
