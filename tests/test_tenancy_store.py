"""The scoped store below the API: what a principal reaches, whatever the handler asks."""

from __future__ import annotations

import pytest

from pbxcore.tenancy.errors import ForbiddenError, NotFoundError
from pbxcore.tenancy.store import Principal, Store
from tests.api_fixtures import Api


async def test_an_extension_user_reads_its_tenant_but_cannot_change_it(api: Api) -> None:
    op = await api.operator()
    t = await api.tenant(op["id"], "acme")
    other = await api.tenant(op["id"], "beta")
    user = Principal(user_id="usr_x", login="101@acme", role="user", tenant_id=t["id"])
    async with api.ctx.db.session() as session:
        store = Store(session, user)
        scope = await store.tenant(t["id"])
        assert scope.tenant.id == t["id"]
        with pytest.raises(ForbiddenError):
            await store.tenant(t["id"], write=True)
        with pytest.raises(NotFoundError):
            await store.tenant(other["id"])
        with pytest.raises(NotFoundError):
            await store.operator(op["id"])
        with pytest.raises(NotFoundError):
            store.platform()
