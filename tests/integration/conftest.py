"""Integration tests share the session's real tritonserver and frontend (fixtures in tests/conftest.py)."""
