from fastapi import APIRouter, Request

from frontend.openapi import errors
from frontend.protocol.admin import LoadRequest, ModelStatus, ModelStatusList, UnloadRequest

router = APIRouter()


@router.get("/admin/models", response_model=ModelStatusList, responses=errors(401, 403, 429, 503))
async def list_models(request: Request):
    """Every model in Triton's repository: state, reason and OpenAI task; for served models their residency
    (pinned, idle TTL, last use, requests in flight, footprint) and Triton's memory against the budgets."""
    return await request.app.state.services.admin.list()


@router.post("/admin/models/load", response_model=ModelStatus,
             responses=errors(400, 401, 403, 404, 409, 413, 429, 503, 504))
async def load_model(body: LoadRequest, request: Request):
    """Load (or reload a loaded model with an allow-listed config override) and wait until READY."""
    return await request.app.state.services.admin.load(body.model, body.config)


@router.post("/admin/models/unload", response_model=ModelStatus,
             responses=errors(400, 401, 403, 404, 409, 413, 429, 503, 504))
async def unload_model(body: UnloadRequest, request: Request):
    """Unload and wait until Triton reports it gone (requests in flight finish first)."""
    return await request.app.state.services.admin.unload(body.model, body.unload_dependents)
