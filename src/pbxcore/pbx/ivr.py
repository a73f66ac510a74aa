"""Voice menus: play a greeting, take a digit, choose where the call goes.

:func:`run_menu` drives one caller through a tenant's menus on a leg pbxcore answered
itself (:meth:`~pbxcore.media.engine.MediaLeg.accept`): it plays the greeting (barge-in:
a digit stops it), waits ``timeout_s`` for a digit (RFC 4733 events from the relay), and
returns the destination of that digit. A missing or invalid digit plays the invalid
prompt and starts again, ``max_retries`` times, then the default destination. With
``direct_dial`` the caller may key an extension number of the tenant. A digit that leads
to another menu enters it, at most :data:`MAX_MENU_DEPTH` menus deep (loops between
menus end there, on the last menu's default). A menu never holds the caller forever: each
menu ends after its retries, and the depth is bounded.

The B2BUA connects the call to what it returns (None: hang up).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pbxcore.media.engine import MediaLeg
from pbxcore.media.prompt import Prompt, default_prompt
from pbxcore.tenancy.snapshot import IvrConfig, TenantConfig

__all__ = ["MAX_MENU_DEPTH", "PromptSource", "run_menu"]

log = logging.getLogger("pbxcore.ivr")

MAX_MENU_DEPTH = 8
PromptSource = Callable[[str], Awaitable[Prompt | None]]  # a tenant's prompt by id


async def _prompt(prompts: PromptSource, prompt_id: str | None, default: str) -> Prompt:
    """The menu's prompt, or the default one when it has none (or it cannot be read)."""
    if prompt_id is not None:
        try:
            found = await prompts(prompt_id)
        except Exception as exc:  # a prompt that cannot be read never stops the call
            log.warning("prompt %s not played: %s", prompt_id, exc)
            found = None
        if found is not None:
            return found
    return default_prompt(default)


async def _one_menu(
    leg: MediaLeg, tenant: TenantConfig, ivr: IvrConfig, prompts: PromptSource, trace: list[Any]
) -> Mapping[str, Any] | None:
    greeting = await _prompt(prompts, ivr.greeting_prompt_id, "beep")
    invalid = await _prompt(prompts, ivr.invalid_prompt_id, "error")
    longest = max((len(n) for n in tenant.extensions), default=1) if ivr.direct_dial else 1
    for _attempt in range(ivr.max_retries + 1):
        await leg.play(greeting, barge_in=True)
        first = await leg.next_digit(ivr.timeout_s)
        if first is None:
            trace.append({"ivr": ivr.id, "digits": None})
            continue  # nothing pressed: the greeting again
        keyed = first.digit
        if keyed in ivr.options:
            trace.append({"ivr": ivr.id, "digits": keyed})
            return ivr.options[keyed]
        if ivr.direct_dial and keyed.isdigit() and longest > 1:
            keyed += await leg.collect_digits(longest - 1, timeout=ivr.timeout_s)
            ext = tenant.extensions.get(keyed)
            if ext is not None and ext.enabled:
                trace.append({"ivr": ivr.id, "digits": keyed, "direct": True})
                return {"type": "extension", "id": ext.id}
        trace.append({"ivr": ivr.id, "digits": keyed, "invalid": True})
        leg.clear_digits()
        await leg.play(invalid)
    return ivr.default_destination


async def run_menu(
    leg: MediaLeg,
    tenant: TenantConfig,
    ivr: IvrConfig,
    prompts: PromptSource,
    *,
    max_depth: int = MAX_MENU_DEPTH,
) -> tuple[Mapping[str, Any] | None, list[Any]]:
    """The destination the caller chose through ``ivr`` (and the menus it leads to, at
    most ``max_depth``), with the trace of what was pressed; None: hang up. Raises
    :class:`~pbxcore.media.engine.LegReleasedError` when the caller's leg goes away."""
    trace: list[Any] = []
    current = ivr
    for _depth in range(max_depth):
        destination = await _one_menu(leg, tenant, current, prompts, trace)
        if destination is None or destination.get("type") != "ivr":
            return destination, trace
        following = tenant.ivrs.get(str(destination.get("id")))
        if following is None:
            log.warning("IVR %s leads to a missing IVR %s", current.id, destination.get("id"))
            return current.default_destination, trace
        current = following
    log.info("IVR %s: %d menus deep, the caller is hung up", ivr.id, max_depth)
    return None, trace
