from fastapi import APIRouter, Request, Response

from frontend.protocol.images import ImageGenerationRequest, ImagesResponse

router = APIRouter()


@router.post("/v1/images/generations", response_model=ImagesResponse, response_model_exclude_none=True)
async def create_images(body: ImageGenerationRequest, request: Request):
    return await request.app.state.services.images.generate(
        body, request.state.request_id, str(request.base_url), request.is_disconnected)


@router.get("/v1/images/files/{token}", response_class=Response)
async def image_file(token: str, request: Request):
    png, seconds_left = await request.app.state.services.images.fetch(token, request.state.request_id)
    return Response(png, media_type="image/png", headers={"Cache-Control": f"private, max-age={seconds_left}"})
