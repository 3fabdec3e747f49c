from fastapi import APIRouter, Request

from frontend.openapi import errors

router = APIRouter()


@router.get("/health")
async def health():
    """Alive: the process answers. Kubernetes' liveness probe."""
    return {"status": "ok"}


@router.get("/health/ready", responses=errors(503))
async def ready(request: Request):
    """Ready: Triton is up and the served models are loaded (503 envelope otherwise)."""
    return await request.app.state.services.models.readiness()
