from fastapi import APIRouter, Request, Response

from frontend.openapi import errors

router = APIRouter()


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
                       **errors(401, 403, 429)})
@router.get("/admin/metrics", response_class=Response, include_in_schema=False)
async def metrics(request: Request):
    """Prometheus text format (open, or a key with the metrics/admin scope: MODELGATE_METRICS_PUBLIC)."""
    services = request.app.state.services
    services.metrics.triton_up.set(1 if await services.backend.server_ready() else 0)
    services.metrics.cache_bytes.set(services.cache.bytes if services.cache is not None else 0)
    return Response(services.metrics.render(), media_type=services.metrics.content_type)
