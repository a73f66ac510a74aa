"""E-mail: the messages the platform sends (welcome mail), queued in the outbox table."""

from __future__ import annotations

from pbxcore.tenancy import models as m

__all__ = ["welcome_mail"]


def welcome_mail(operator: m.Operator, tenant: m.Tenant, admin: m.User, url: str) -> m.MailMessage:
    """The client admin's welcome mail: where to log in and as whom (never the password)."""
    product = operator.branding.get("product_name") or operator.name
    body = (
        f"Hello {admin.full_name or admin.username},\n\n"
        f"your virtual PBX {tenant.name!s} on {product} is ready.\n\n"
        f"Log in at: {url}\n"
        f"Username: {admin.login}\n\n"
        "Your password was given to you by your operator; you can change it after login.\n"
    )
    return m.MailMessage(
        id=m.new_id("mail"),
        operator_id=operator.id,
        tenant_id=tenant.id,
        to_addr=admin.email or "",
        subject=f"Welcome to {product}: your PBX {tenant.name}",
        body=body,
        created_at=m.utcnow(),
        next_attempt_at=m.utcnow(),
    )
