"""All frontend configuration, read once from MODELGATE_* environment variables (or a .env file)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from frontend.cors import check_origins


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELGATE_", env_file=".env", extra="ignore")

    # Loopback unless the operator opens it (MODELGATE_HOST=0.0.0.0; the images and the chart do).
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    # Browsers (frontend/cors.py): origins whose web pages may call the API, as browsers send them
    # (`https://app.example.com`, `http://localhost:5173`), comma-separated; `*` alone: any origin. Credentials
    # (cookies) are never allowed: the API takes keys. Empty: no CORS headers, pages elsewhere cannot read answers.
    cors_origins: Annotated[list[str], NoDecode] = Field([], description="origins allowed to call the API from a "
                                                         "browser (CORS), comma-separated; `*`: any; empty: none")
    # The web playground at / (frontend/routers/playground.py, docs/playground.md): a static page, open like /docs,
    # whose API calls need keys as any client's do; false: / is a 404.
    playground: bool = Field(True, description="serve the web playground at / (static; its API calls need keys)")

    # Triton. `dns:///triton-headless:8001` spreads calls over every replica behind a headless Service.
    triton_grpc_url: str = "localhost:8001"
    triton_lb_policy: str = "round_robin"
    # Triton's restricted protocols (model repository, config): the header value Triton was started with
    # (`--grpc-restricted-protocol=...:<TRITON_API_HEADER>=<secret>`); empty: Triton does not restrict them.
    triton_api_secret: SecretStr = Field(SecretStr(""), description="value of the header that unlocks Triton's "
                                         "model-repository and model-config protocols")
    request_timeout_s: float = Field(600.0, gt=0, description="deadline of one Triton call")
    # Models that must be READY for /health/ready; empty means "Triton ready and at least one served model".
    required_models: Annotated[list[str], NoDecode] = []
    model_index_ttl_s: float = Field(5.0, ge=0, description="how long the repository index is reused")

    # Request limits.
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0)
    embeddings_max_inputs: int = Field(2048, gt=0, description="inputs per /v1/embeddings request (OpenAI: 2048)")
    rerank_max_documents: int = Field(1000, gt=0, description="documents per /v1/rerank request, text_2 items per "
                                      "/v1/score request (Cohere: 1000)")
    completions_max_prompts: int = Field(32, gt=0, description="prompts per /v1/completions request (each one a "
                                         "generation, counted as a request by the rate limits)")

    # Image URLs point back at this frontend: signed, expiring, nothing stored (see services/images.py).
    images_url_ttl_s: float = Field(3600.0, gt=0, description="how long an image URL works (OpenAI: 1 hour)")
    images_url_secret: SecretStr = Field(SecretStr(""), description="HMAC key shared by every replica; "
                                         "empty: a random key per process (links die with it)")
    images_file_cache_bytes: int = Field(64 * 1024 * 1024, ge=0, description="PNGs behind image URLs kept in "
                                         "memory so a fetch does not run the pipeline again (LRU beyond it)")
    public_url: str = Field("", description="how clients reach this frontend, for image URLs; empty: the "
                                            "request's own scheme and host")

    # Chat images (frontend/images_fetch.py): image_url parts from data URIs, or fetched over http(s) from
    # public addresses only, unless listed here (`127.0.0.1:8080`, `10.0.0.0/8`, `[::1]:9000`, comma-separated).
    image_url_allowlist: Annotated[list[str], NoDecode] = []
    image_fetch_timeout_s: float = Field(10.0, gt=0, description="deadline of one image URL fetch, redirects included")
    image_max_bytes: int = Field(20 * 1024 * 1024, gt=0, description="largest image accepted (fetched or inline)")
    image_max_pixels: int = Field(50_000_000, gt=0, description="largest image accepted, width x height")
    image_fetch_max_redirects: int = Field(3, ge=0)
    image_max_request_pixels: int = Field(32_000_000, gt=0, description="all of one request's images together, "
                                          "width x height, read from their headers before any decoding")
    image_decode_workers: int = Field(2, gt=0, description="threads that decode chat images (a bounded pool)")

    # Operations (docs/operations.md): API keys, rate limits, response cache, metrics, model control.
    api_keys_file: str = Field("", description="JSON keys file (hashes, scopes, limits); see frontend/auth.py")
    api_keys: SecretStr = Field(SecretStr(""), description="comma-separated `key` or `name=key` (or "
                                "`name=sha256:<hex>`), every scope, the default limits; empty + no file: auth off")
    default_requests_per_minute: int = Field(0, ge=0, description="limits of keys that set none; 0: unlimited")
    default_tokens_per_minute: int = Field(0, ge=0)
    default_max_concurrent: int = Field(0, ge=0)
    redis_url: str = Field("", description="redis://host:port/db shares rate limits between replicas; "
                                           "empty: in memory")
    metrics_public: bool = Field(True, description="/metrics without a key; false: a key with the metrics "
                                                   "or admin scope")
    # Responses API (`store: true`): kept where the rate limits are (Redis when redis_url is set), per API key.
    responses_ttl_s: float = Field(30 * 86400.0, gt=0, description="how long a stored response is kept (OpenAI: "
                                   "30 days)")
    responses_store_max_bytes: int = Field(64 * 1024 * 1024, ge=0, description="in-memory store size (LRU "
                                           "beyond it); Redis is bounded by its own maxmemory")
    cache_enabled: bool = True
    cache_max_bytes: int = Field(64 * 1024 * 1024, ge=0, description="response cache size (LRU beyond it)")
    cache_ttl_s: float = Field(600.0, gt=0, description="how long a cached response is reused")
    cache_scope: Literal["key", "global"] = Field("key", description="key: entries per API key; global: shared")
    # The chat engine's prefix cache: "key" gives each API key its own (no timing side channel between
    # tenants, as vLLM's cache_salt); "global" shares it (single-tenant deployments).
    prefix_cache_scope: Literal["key", "global"] = "key"
    admin_wait_s: float = Field(120.0, gt=0, description="how long load/unload wait for the model's new state")
    # Models on demand (frontend/residency.py, docs/operations.md "Models on demand").
    load_on_demand: bool = Field(False, description="a request for a repository model that is not loaded loads it")
    load_wait_s: float = Field(30.0, gt=0, description="how long such a request waits for the load before 503 "
                               "with Retry-After (the load goes on)")
    idle_unload_s: float = Field(0.0, ge=0, description="unload a model after this long without requests (a "
                                 "model's `idle_unload_s` parameter overrides it); 0: never")
    pinned_models: Annotated[list[str], NoDecode] = Field([], description="models never unloaded by idleness or "
                                                          "budgets, comma-separated (or a model's `pinned` parameter)")
    max_loaded_models: int = Field(0, ge=0, description="served models loaded at once; 0: no limit")
    host_memory_budget_bytes: int = Field(0, ge=0, description="Triton's host memory (its processes' PSS) before "
                                          "least recently used models are evicted; 0: none")
    gpu_memory_budget_bytes: int = Field(0, ge=0, description="Triton's GPU memory (nvidia-smi per process); 0: none")
    loads_per_key_per_minute: int = Field(10, ge=0, description="loads on demand one API key may start per minute; "
                                          "0: no limit")
    model_repository: str = Field("", description="the model repository folder as this frontend sees it "
                                  "(read-only): configs of models no replica has seen loaded; empty: none")
    # OpenTelemetry traces (frontend/tracing.py): off by default; when on, configured by the standard OTEL_*
    # variables (endpoint, service name, sampler, exporter), which OTEL_SDK_DISABLED=true overrides.
    tracing: bool = Field(False, description="OpenTelemetry spans per request and Triton call, exported as the "
                                             "OTEL_* variables say (docs/operations.md, Tracing)")

    @field_validator("required_models", "image_url_allowlist", "cors_origins", "pinned_models", mode="before")
    @classmethod
    def _split(cls, value):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return check_origins(value)
