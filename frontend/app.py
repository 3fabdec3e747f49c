"""`create_app(settings)`: the FastAPI app, owning its Triton client for the app's lifetime."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request

from frontend import cors, openapi
from frontend.admission import admitted, named_key_admission
from frontend.auth import ADMIN, INFERENCE, METRICS, KeyStore, Limits
from frontend.cache import CacheHit, CacheRecorder, ReplayedResponse, ResponseCache
from frontend.catalog import ModelCatalog
from frontend.errors import install_handlers
from frontend.guarded_backend import GuardedBackend
from frontend.images_fetch import ImageFetcher
from frontend.images_upload import UploadLimits
from frontend.metering import Metering
from frontend.metrics import Metrics
from frontend.middleware import BodySizeLimit, ContextLayer
from frontend.ratelimit import RateLimiter
from frontend.registry import ModelRegistry
from frontend.residency import Residency
from frontend.response_store import ResponseStore
from frontend.routers import admin, chat, completions, embeddings, health, images, metrics, models, responses
from frontend.routers import rerank
from frontend.routers import tokenize
from frontend.routers import playground
from frontend.services.admin import AdminService
from frontend.services.chat import ChatService
from frontend.services.completions import CompletionService
from frontend.services.embeddings import EmbeddingService
from frontend.services.rerank import RerankService
from frontend.services.images import ImageLinks, ImageService
from frontend.services.models import ModelService
from frontend.services.responses import ResponsesService
from frontend.services.tokenize import TokenizeService
from frontend.settings import Settings
from frontend.triton import Backend, TritonBackend

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a request handler may use; built once per app in the lifespan."""

    settings: Settings
    backend: Backend
    registry: ModelRegistry
    models: ModelService
    embeddings: EmbeddingService
    tokenize: TokenizeService  # /tokenize, /detokenize
    rerank: RerankService  # /v1/rerank and /v1/score, over cross-encoders or embeddings models
    images: ImageService
    keys: KeyStore  # frontend/auth.py
    limiter: RateLimiter  # frontend/ratelimit.py
    cache: ResponseCache | None  # frontend/cache.py; None when off
    metrics: Metrics  # frontend/metrics.py
    admin: AdminService
    chat: ChatService
    completions: CompletionService
    responses: ResponsesService  # the Responses API, over chat
    residency: Residency  # frontend/residency.py: models on demand, idle unload, budgets

    @classmethod
    def build(cls, settings: Settings, backend: Backend) -> "Services":
        registry = ModelRegistry(backend, settings.model_index_ttl_s,
                                 ModelCatalog(settings.redis_url, settings.model_repository))
        keys = KeyStore.load(settings.api_keys_file, settings.api_keys.get_secret_value(),
                             Limits(settings.default_requests_per_minute, settings.default_tokens_per_minute,
                                    settings.default_max_concurrent))
        (log.info if keys.enabled and keys.keys else log.warning)("%s", keys.describe())
        # A lease outlives the longest request it can guard: the Triton deadline, plus the response's tail.
        limiter = RateLimiter(settings.redis_url, settings.request_timeout_s + 60)
        cache = (ResponseCache(settings.cache_max_bytes, settings.cache_ttl_s, settings.cache_scope)
                 if settings.cache_enabled and settings.cache_max_bytes else None)
        log.info("rate limits in %s; response cache %s", "redis" if limiter.shared else "memory",
                 f"{settings.cache_max_bytes} bytes, {settings.cache_ttl_s:g}s, per {settings.cache_scope}"
                 if cache is not None else "off")
        metrics = Metrics()
        shared_prefix = settings.prefix_cache_scope == "global"

        def forget(model: str) -> None:  # a reloaded model may answer differently
            if cache is not None:
                cache.clear(model)

        residency = Residency.from_settings(settings, backend, registry, metrics, forget)
        admin = AdminService(backend, registry, metrics, forget, settings.admin_wait_s, residency)
        guarded = GuardedBackend(backend, residency)  # the inference services': a model gone mid-request is a 503
        embedding_service = EmbeddingService(guarded, registry, settings.embeddings_max_inputs)
        chat = ChatService(guarded, registry, ImageFetcher.from_settings(settings), shared_prefix)
        store = ResponseStore(settings.redis_url, settings.responses_ttl_s, settings.responses_store_max_bytes)
        return cls(
            settings=settings, backend=backend, registry=registry, keys=keys, limiter=limiter, cache=cache,
            metrics=metrics, admin=admin, residency=residency,
            models=ModelService(backend, registry, settings.required_models, settings.load_on_demand),
            tokenize=TokenizeService(guarded, registry),
            embeddings=embedding_service,
            rerank=RerankService(guarded, registry, embedding_service, settings.rerank_max_documents),
            images=ImageService(guarded, registry, ImageLinks(settings.images_url_secret.get_secret_value().encode(),
                                                              settings.images_url_ttl_s),
                                named_key_admission(keys, limiter, metrics), settings.public_url,
                                settings.images_file_cache_bytes, UploadLimits.from_settings(settings)),
            chat=chat, responses=ResponsesService(chat, store),
            completions=CompletionService(guarded, registry, shared_prefix, settings.completions_max_prompts),
        )


def create_app(settings: Settings | None = None, backend: Backend | None = None,
               span_exporter=None) -> FastAPI:
    """The app. Pass `backend` to use another Backend (tests); otherwise Triton at settings.triton_grpc_url.
    With tracing on, `span_exporter` (an OpenTelemetry SpanExporter, tests) gets every span as it ends instead
    of the exporters OTEL_TRACES_EXPORTER names."""
    settings = settings or Settings()
    tracing = _tracing(settings, span_exporter)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        owned = backend is None
        client = backend or TritonBackend(settings.triton_grpc_url, settings.request_timeout_s,
                                          settings.triton_lb_policy,
                                          api_secret=settings.triton_api_secret.get_secret_value(),
                                          trace_metadata=tracing.triton_metadata if tracing else None)
        app.state.services = Services.build(settings, tracing.backend(client) if tracing else client)
        app.state.services.residency.start()
        log.info("frontend ready; Triton at %s", settings.triton_grpc_url)
        try:
            yield
        finally:
            await app.state.services.residency.close()
            await app.state.services.limiter.close()
            await app.state.services.responses.store.close()
            if app.state.services.chat.images is not None:
                app.state.services.chat.images.close()  # its decode threads
            if owned:
                await client.close()
            if tracing is not None:
                tracing.shutdown()  # exports what is still queued

    app = FastAPI(title="modelgate", summary="OpenAI-compatible API served by NVIDIA Triton", lifespan=lifespan)
    install_handlers(app)
    openapi.install(app)  # error responses documented with the envelope; no 422

    @app.exception_handler(CacheHit)
    async def _replay(request: Request, hit: CacheHit):
        return ReplayedResponse(hit.response)

    # Outermost last: CORS (when configured) -> ContextLayer -> Metering -> BodySizeLimit -> CacheRecorder ->
    # routers, whose dependencies authenticate, admit and look up the cache (frontend/admission.py).
    app.add_middleware(CacheRecorder)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Metering)
    if tracing is not None:
        app.add_middleware(tracing.request_attributes)  # reads the RequestContext ContextLayer makes
    app.add_middleware(ContextLayer)
    cors.install(app, settings.cors_origins)  # outermost: preflights need no key, every answer gets its headers
    if tracing is not None:
        tracing.instrument(app)  # the server span, around every middleware
    app.include_router(health.router)  # open: probes
    app.include_router(images.files_router)  # open: a signed URL is its own credential (and names its key)
    if settings.playground:
        app.include_router(playground.build_router())  # open: a static page; its API calls need keys
    for module in (models, embeddings, tokenize, rerank, images, chat, completions, responses):
        app.include_router(module.router, dependencies=[admitted(INFERENCE)])
    app.include_router(admin.router, dependencies=[admitted(ADMIN)])
    app.include_router(metrics.router, dependencies=[admitted(METRICS)])
    return app


def _tracing(settings: Settings, exporter):
    """frontend.tracing.Tracing when MODELGATE_TRACING is on and OTEL_SDK_DISABLED is not true; else None."""
    if not settings.tracing:
        return None
    from frontend import tracing  # noqa: PLC0415 - off: no instrumentation, tracing SDK or exporter loaded

    if not tracing.enabled_by_environment():
        log.info("MODELGATE_TRACING is on, but OTEL_SDK_DISABLED=true: no tracing")
        return None
    return tracing.Tracing.from_environment(exporter)
