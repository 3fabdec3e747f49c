from fastapi import APIRouter, Request, Response

from frontend.context import context_of
from frontend.openapi import INFERENCE, errors
from frontend.protocol.images import ImageGenerationRequest, ImagesResponse

router = APIRouter()
# Open: the signed URL is its own credential, and names the key whose limits a fetch counts against.
files_router = APIRouter()


@router.post("/v1/images/generations", response_model=ImagesResponse, response_model_exclude_none=True,
             responses=errors(*INFERENCE))
async def create_images(body: ImageGenerationRequest, request: Request):
    return await request.app.state.services.images.generate(
        body, context_of(request), str(request.base_url), request.is_disconnected)


@files_router.get("/v1/images/files/{token}", response_class=Response,
                  responses={200: {"content": {"image/png": {}}, "description": "The PNG"},
                             **errors(404, 410, 429, 503)})
async def image_file(token: str, request: Request):
    png, seconds_left = await request.app.state.services.images.fetch(token, context_of(request))
    return Response(png, media_type="image/png", headers={"Cache-Control": f"private, max-age={seconds_left}"})
