from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from frontend.context import context_of
from frontend.errors import InvalidRequest
from frontend.openapi import INFERENCE, errors
from frontend.protocol.images import (
    ImageEditRequest,
    ImageGenerationRequest,
    ImagesResponse,
    ImageVariationRequest,
    UploadedFile,
    form_schema,
    form_values,
)

router = APIRouter()
# Open: the signed URL is its own credential, and names the key whose limits a fetch counts against.
files_router = APIRouter()

MAX_FORM_FILES = 4  # image (or image[]) and mask; more is refused by the parser, not read
MAX_FORM_FIELDS = 64


def multipart(model):
    """`model`, parsed from a multipart/form-data body by a dependency; its errors are 400s naming the field."""

    async def parse(request: Request):
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
            raise InvalidRequest("this endpoint takes multipart/form-data (the image as a file part), as the "
                                 "openai SDK sends it", code="invalid_content_type")
        async with request.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS) as form:
            parts = [(name, value if isinstance(value, str) else UploadedFile(value.filename or "",
                                                                              await value.read()))
                     for name, value in form.multi_items()]
        try:
            return model.model_validate(form_values(parts))
        except ValidationError as exc:  # as FastAPI reports a JSON body's: one 400 naming the field
            raise RequestValidationError(exc.errors()) from exc

    return Annotated[model, Depends(parse)]


EditForm = multipart(ImageEditRequest)
VariationForm = multipart(ImageVariationRequest)


@router.post("/v1/images/generations", response_model=ImagesResponse, response_model_exclude_none=True,
             responses=errors(*INFERENCE))
async def create_images(body: ImageGenerationRequest, request: Request):
    return await request.app.state.services.images.generate(
        body, context_of(request), str(request.base_url), request.is_disconnected)


@router.post("/v1/images/edits", response_model=ImagesResponse, response_model_exclude_none=True,
             responses=errors(*INFERENCE), openapi_extra=form_schema(ImageEditRequest))
async def edit_images(body: EditForm, request: Request):
    return await request.app.state.services.images.edit(
        body, context_of(request), str(request.base_url), request.is_disconnected)


@router.post("/v1/images/variations", response_model=ImagesResponse, response_model_exclude_none=True,
             responses=errors(*INFERENCE), openapi_extra=form_schema(ImageVariationRequest))
async def create_variations(body: VariationForm, request: Request):
    return await request.app.state.services.images.edit(
        body, context_of(request), str(request.base_url), request.is_disconnected)


@files_router.get("/v1/images/files/{token}", response_class=Response,
                  responses={200: {"content": {"image/png": {}}, "description": "The PNG"},
                             **errors(404, 410, 429, 503)})
async def image_file(token: str, request: Request):
    png, seconds_left = await request.app.state.services.images.fetch(token, context_of(request))
    return Response(png, media_type="image/png", headers={"Cache-Control": f"private, max-age={seconds_left}"})
