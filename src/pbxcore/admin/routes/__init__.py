"""The API's routers, one module per area; :data:`ROUTERS` is what the app mounts."""

from fastapi import APIRouter

from pbxcore.admin.routes import (
    audit,
    auth,
    calls,
    extensions,
    health,
    numbers,
    platform,
    routing,
    tenants,
)

ROUTERS: list[APIRouter] = [
    health.router,
    auth.router,
    platform.router,
    tenants.router,
    extensions.router,
    audit.router,
    calls.router,
    routing.router,
    numbers.router,
]
