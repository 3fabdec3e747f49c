from fastapi import APIRouter, Request

from frontend.openapi import errors
from frontend.protocol.models import Model, ModelList

router = APIRouter()


@router.get("/v1/models", response_model=ModelList, responses=errors(401, 403, 429, 503))
async def list_models(request: Request):
    return await request.app.state.services.models.list()


@router.get("/v1/models/{model_id:path}", response_model=Model, responses=errors(401, 403, 404, 429, 503))
async def retrieve_model(model_id: str, request: Request):
    return await request.app.state.services.models.retrieve(model_id)
