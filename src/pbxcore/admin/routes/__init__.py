"""The API's routers, one module per area; :data:`ROUTERS` is what the app mounts."""

from fastapi import APIRouter

from pbxcore.admin.routes import (
    audit,
    auth,
    calls,
    events,
    extensions,
    health,
    ivrs,
    numbers,
    platform,
    prompts,
    routing,
    schedules,
    tenants,
)

ROUTERS: list[APIRouter] = [
    health.router,
    auth.router,
    platform.router,
    tenants.router,
    extensions.router,
    prompts.router,
    ivrs.router,
    schedules.router,
    audit.router,
    calls.router,
    events.router,
    routing.router,
    numbers.router,
]

# mounted at the root, outside /api/v1: /health, /ready, /metrics (probes, Prometheus)
ROOT_ROUTERS: list[APIRouter] = [health.root_router]
