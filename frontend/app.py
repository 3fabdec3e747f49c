"""`create_app(settings)`: the FastAPI app, owning its Triton client for the app's lifetime."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from frontend.errors import install_handlers
from frontend.images_fetch import ImageFetcher
from frontend.middleware import BodySizeLimit, RequestContext
from frontend.operations import CacheLayer, Gate, Operations
from frontend.registry import ModelRegistry
from frontend.routers import admin, chat, completions, embeddings, health, images, metrics, models
from frontend.services.admin import AdminService
from frontend.services.chat import ChatService
from frontend.services.completions import CompletionService
from frontend.services.embeddings import EmbeddingService
from frontend.services.images import ImageLinks, ImageService
from frontend.services.models import ModelService
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
    images: ImageService
    ops: Operations  # keys, rate limits, response cache, metrics (frontend/operations.py)
    admin: AdminService
    chat: ChatService
    completions: CompletionService

    @classmethod
    def build(cls, settings: Settings, backend: Backend) -> "Services":
        registry = ModelRegistry(backend, settings.model_index_ttl_s)
        ops = Operations.build(settings)
        return cls(
            settings=settings, backend=backend, registry=registry, ops=ops,
            admin=AdminService(backend, registry, ops.metrics, ops.clear_cache, settings.admin_wait_s),
            models=ModelService(backend, registry, settings.required_models),
            embeddings=EmbeddingService(backend, registry, settings.embeddings_max_inputs),
            images=ImageService(backend, registry, ImageLinks(settings.images_url_secret.get_secret_value().encode(),
                                                              settings.images_url_ttl_s), settings.public_url),
            chat=ChatService(backend, registry, ImageFetcher.from_settings(settings)),
            completions=CompletionService(backend, registry),
        )


def create_app(settings: Settings | None = None, backend: Backend | None = None) -> FastAPI:
    """The app. Pass `backend` to use another Backend (tests); otherwise Triton at settings.triton_grpc_url."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        owned = backend is None
        client = backend or TritonBackend(settings.triton_grpc_url, settings.request_timeout_s,
                                          settings.triton_lb_policy)
        app.state.services = Services.build(settings, client)
        log.info("frontend ready; Triton at %s", settings.triton_grpc_url)
        try:
            yield
        finally:
            if owned:
                await client.close()

    app = FastAPI(title="modelgate", summary="OpenAI-compatible API served by NVIDIA Triton", lifespan=lifespan)
    install_handlers(app)
    # Outermost last: RequestContext -> Gate -> BodySizeLimit -> CacheLayer -> routers (frontend/operations.py).
    app.add_middleware(CacheLayer)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Gate)
    app.add_middleware(RequestContext)
    for module in (health, models, embeddings, images, chat, completions):
        app.include_router(module.router)
    for module in (admin, metrics):
        app.include_router(module.router)
    return app
