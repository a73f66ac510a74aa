"""``GET /api/v1/health``: no auth, no database; says the API process answers.

It is also the framework's ceiling in ``bench/bench_api.py``: the cheapest request the app
serves, beside which the real endpoints are measured.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.responses import Response

router = APIRouter(tags=["health"])

_OK = b'{"status":"ok"}'


class HealthOut(BaseModel):
    status: str


@router.get("/health", response_model=HealthOut, summary="The API answers (no auth)")
async def health() -> Response:
    return Response(_OK, media_type="application/json")
