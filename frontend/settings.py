"""All frontend configuration, read once from MODELGATE_* environment variables (or a .env file)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELGATE_", env_file=".env", extra="ignore")

    host: str = "0.0.0.0"
    port: int = 8000
    log_level: str = "info"

    # Triton. `dns:///triton-headless:8001` spreads calls over every replica behind a headless Service.
    triton_grpc_url: str = "localhost:8001"
    triton_lb_policy: str = "round_robin"
    request_timeout_s: float = Field(600.0, gt=0, description="deadline of one Triton call")
    # Models that must be READY for /health/ready; empty means "Triton ready and at least one served model".
    required_models: Annotated[list[str], NoDecode] = []
    model_index_ttl_s: float = Field(5.0, ge=0, description="how long the repository index is reused")

    # Request limits.
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0)
    embeddings_max_inputs: int = Field(2048, gt=0, description="inputs per /v1/embeddings request (OpenAI: 2048)")

    # Image URLs point back at this frontend: signed, expiring, nothing stored (see services/images.py).
    images_url_ttl_s: float = Field(3600.0, gt=0, description="how long an image URL works (OpenAI: 1 hour)")
    images_url_secret: SecretStr = Field(SecretStr(""), description="HMAC key shared by every replica; "
                                         "empty: a random key per process (links die with it)")
    public_url: str = Field("", description="how clients reach this frontend, for image URLs; empty: the "
                                            "request's own scheme and host")

    @field_validator("required_models", mode="before")
    @classmethod
    def _split(cls, value):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value
