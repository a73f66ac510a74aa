"""The admin layer: the HTTP API (operator, tenant and integration scopes), auth, e-mail."""

from pbxcore.admin.app import AdminContext, ApiSettings, create_app

__all__ = ["AdminContext", "ApiSettings", "create_app"]
