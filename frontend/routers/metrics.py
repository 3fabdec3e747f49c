from fastapi import APIRouter, Request, Response

router = APIRouter()


@router.get("/metrics", response_class=Response)
@router.get("/admin/metrics", response_class=Response, include_in_schema=False)
async def metrics(request: Request):
    """Prometheus text format (open, or a key with the metrics/admin scope: MODELGATE_METRICS_PUBLIC)."""
    services = request.app.state.services
    body = await services.ops.scrape(services.backend)
    return Response(body, media_type=services.ops.metrics.content_type)
