"""First start: the platform admin, and the other things an empty database needs."""

from __future__ import annotations

import os

from sqlalchemy import func, select

from pbxcore.tenancy import models as m
from pbxcore.tenancy.db import Database
from pbxcore.tenancy.secrets import generate_password
from pbxcore.tenancy.store import Principal, Store

__all__ = ["ADMIN_PASSWORD_ENV", "ensure_platform_admin"]

ADMIN_PASSWORD_ENV = "PBXCORE_ADMIN_PASSWORD"


async def ensure_platform_admin(
    db: Database, password: str | None = None, username: str = "admin"
) -> str | None:
    """Create the platform admin if the database has no user at all.

    The password is ``password``, else ``PBXCORE_ADMIN_PASSWORD``, else a generated one.
    Returns the generated password (for the caller to print once), or None if nothing was
    generated (a user existed, or the password was given).
    """
    async with db.session() as session:
        users = await session.scalar(select(func.count()).select_from(m.User))
        if users:
            return None
        given = password or os.environ.get(ADMIN_PASSWORD_ENV) or None
        chosen = given or generate_password(20)
        store = Store(session, Principal.system("first start"))
        platform = store.platform()
        await store.create_user(
            platform.platform_admins,
            role="platform_admin",
            username=username,
            password=chosen,
            login=username,
            full_name="Platform admin",
        )
        await store.commit()
    return None if given else chosen
