"""The API's routers, one module per area; :data:`ROUTERS` is what the app mounts."""

from fastapi import APIRouter

from pbxcore.admin.routes import audit, auth, calls, extensions, health, platform, tenants

ROUTERS: list[APIRouter] = [
    auth.router,
    platform.router,
    tenants.router,
    extensions.router,
    audit.router,
    calls.router,
    health.router,
]
