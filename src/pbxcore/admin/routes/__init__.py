"""The API's routers, one module per area; :data:`ROUTERS` is what the app mounts."""

from fastapi import APIRouter

from pbxcore.admin.routes import auth, extensions, numbers, platform, routing, tenants

ROUTERS: list[APIRouter] = [
    auth.router,
    platform.router,
    tenants.router,
    extensions.router,
    routing.router,
    numbers.router,
]
