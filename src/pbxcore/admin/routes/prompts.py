"""Tenant scope: prompts, uploaded as WAV (mono 8 kHz PCM16 or G.711), kept as μ-law.

``POST /tenants/{t}/prompts`` takes a multipart form with ``name`` and ``file``; the audio
comes back as a WAV at ``.../prompts/{id}/audio``. Uploads may be larger than other
bodies (``ApiSettings.max_upload_bytes``); the length rule is
:data:`~pbxcore.tenancy.rules.MAX_PROMPT_SECONDS`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from pydantic import Field
from starlette.responses import Response

from pbxcore.admin.deps import (
    CurrentPage,
    CurrentStore,
    context,
    json_body_response,
    json_response,
    page_body,
)
from pbxcore.admin.schemas import In, ListOf, Out, Text
from pbxcore.tenancy import models as m
from pbxcore.tenancy.errors import InvalidError
from pbxcore.tenancy.views import view
from pbxcore.wavfile import WavAudio, wav_bytes

router = APIRouter(tags=["prompts"])

PromptName = Annotated[Text, Field(min_length=1, max_length=200)]


class PromptOut(Out):
    tenant_id: str
    name: str
    duration_s: float


class PromptPatch(In):
    name: PromptName


@router.get("/tenants/{t}/prompts", response_model=ListOf[PromptOut], summary="List prompts")
async def list_prompts(t: str, store: CurrentStore, page: CurrentPage) -> Response:
    scope = await store.tenant(t)
    rows, total = await scope.prompts.list(page.limit, page.offset, order_by=(m.Prompt.name,))
    return json_body_response(page_body([view(r) for r in rows], total))


@router.post(
    "/tenants/{t}/prompts",
    status_code=201,
    response_model=PromptOut,
    summary="Upload a prompt (WAV: mono 8 kHz, PCM16, μ-law or A-law; at most 10 minutes)",
)
async def create_prompt(
    t: str,
    request: Request,
    store: CurrentStore,
    name: Annotated[str, Form(min_length=1, max_length=200)],
    file: Annotated[UploadFile, File(description="The WAV file")],
) -> Response:
    scope = await store.tenant(t, write=True)
    limit = context(request).settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise InvalidError("file", f"the file is larger than {limit} bytes")
    row = await scope.create_prompt(name.strip(), data)
    await store.commit()
    return json_response(view(row), 201)


@router.get("/tenants/{t}/prompts/{p}", response_model=PromptOut, summary="One prompt")
async def get_prompt(t: str, p: str, store: CurrentStore) -> Response:
    scope = await store.tenant(t)
    return json_response(view(await scope.prompts.get(p)))


@router.get(
    "/tenants/{t}/prompts/{p}/audio",
    response_class=Response,
    responses={200: {"content": {"audio/wav": {}}}},
    summary="The prompt's audio as a WAV (8 kHz μ-law)",
)
async def prompt_audio(t: str, p: str, store: CurrentStore) -> Response:
    scope = await store.tenant(t)
    row = await scope.prompts.get(p)
    audio = await scope.prompt_audio(row)
    return Response(
        wav_bytes(WavAudio("ulaw", 8000, 1, audio)),
        media_type="audio/wav",
        headers={"Content-Disposition": f'attachment; filename="{row.id}.wav"'},
    )


@router.patch("/tenants/{t}/prompts/{p}", response_model=PromptOut, summary="Rename a prompt")
async def patch_prompt(t: str, p: str, body: PromptPatch, store: CurrentStore) -> Response:
    scope = await store.tenant(t, write=True)
    row = await scope.prompts.get(p)
    await scope.prompts.update(row, {"name": body.name.strip()})
    await store.commit()
    return json_response(view(row))


@router.delete("/tenants/{t}/prompts/{p}", status_code=204, summary="Delete a prompt")
async def delete_prompt(t: str, p: str, store: CurrentStore) -> Response:
    scope = await store.tenant(t, write=True)
    await scope.prompts.delete(await scope.prompts.get(p))
    await store.commit()
    return Response(status_code=204)
