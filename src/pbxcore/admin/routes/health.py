"""Liveness, readiness and metrics; no auth on any of them.

- ``GET /api/v1/health`` (and ``/health``): the API process answers; no database. It is
  also the framework's ceiling in ``bench/bench_api.py``: the cheapest request the app
  serves, beside which the real endpoints are measured.
- ``GET /api/v1/ready`` (and ``/ready``): 200 when the database answers and the server's
  own checks pass (the configuration snapshot loaded, SIP listening); else 503 with the
  error body naming each check that failed in ``details``.
- ``GET /metrics``: the server's Prometheus metrics (text format), when it has them.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from sqlalchemy import text
from starlette.responses import Response

from pbxcore.admin.deps import AdminContext, context, json_response
from pbxcore.admin.errors import error_response

router = APIRouter(tags=["health"])
# the same answers at the root, where probes and Prometheus look (not in the OpenAPI twice)
root_router = APIRouter(tags=["health"], include_in_schema=False)

_OK = b'{"status":"ok"}'
DB_CHECK_TIMEOUT = 3.0  # seconds: an unreachable PostgreSQL must not hang the probe
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Ctx = Annotated[AdminContext, Depends(context)]


class HealthOut(BaseModel):
    status: str


class ReadyOut(BaseModel):
    status: str
    checks: dict[str, str]


@router.get("/health", response_model=HealthOut, summary="The API answers (no auth)")
@root_router.get("/health")
async def health() -> Response:
    return Response(_OK, media_type="application/json")


async def _database_problem(ctx: AdminContext) -> str | None:
    try:
        async with asyncio.timeout(DB_CHECK_TIMEOUT), ctx.db.session() as session:
            await session.execute(text("SELECT 1"))
    except TimeoutError:
        return "the database does not answer"
    except Exception as exc:  # whatever the driver raises: not ready, said in one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return first if first.startswith("the database") else f"the database: {first}"
    return None


@router.get(
    "/ready",
    response_model=ReadyOut,
    summary="Ready to serve: database, configuration snapshot, SIP (no auth)",
    responses={503: {"description": "Not ready: `details` names each failed check"}},
)
@root_router.get("/ready")
async def ready(ctx: Ctx) -> Response:
    problems = {"database": await _database_problem(ctx)}
    if ctx.readiness is not None:
        problems |= ctx.readiness()
    failed = {name: why for name, why in problems.items() if why is not None}
    if failed:
        return error_response(
            503,
            "not_ready",
            "not ready: " + ", ".join(sorted(failed)),
            failed,
            headers={"Retry-After": "1"},
        )
    return json_response({"status": "ready", "checks": dict.fromkeys(problems, "ok")})


@root_router.get("/metrics")
async def metrics(ctx: Ctx) -> Response:
    if ctx.metrics is None:
        return error_response(404, "not_found", "this server has no metrics")
    return Response(await ctx.metrics(), media_type=METRICS_TYPE)
