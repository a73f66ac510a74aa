"""IVR menus through the API (tenant scope), on both stores: the ivr feature gates them,
their prompts and destinations must be the tenant's, what they name cannot be deleted
under them, other tenants see nothing, and random bodies never give a 5xx."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbxcore.wavfile import WavAudio, wav_bytes
from tests.api_fixtures import Api

WAV = wav_bytes(WavAudio("ulaw", 8000, 1, b"\xff" * 800))


async def _prompt(api: Api, t: str, name: str) -> str:
    r = await api.post(
        f"/tenants/{t}/prompts", data={"name": name}, files={"file": ("g.wav", WAV, "audio/wav")}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _world(api: Api) -> dict[str, Any]:
    op = await api.operator()
    t = await api.tenant(op["id"], "acme", features=["ivr"])
    plain = await api.tenant(op["id"], "plain")
    ext = await api.create(f"/tenants/{t['id']}/extensions", {"number": "201"})
    other_ext = await api.create(f"/tenants/{plain['id']}/extensions", {"number": "201"})
    return {
        "op": op["id"],
        "t": t["id"],
        "plain": plain["id"],
        "ext": ext["id"],
        "other_ext": other_ext["id"],
        "greeting": await _prompt(api, t["id"], "greeting"),
        "other_prompt": await _prompt(api, plain["id"], "theirs"),
    }


async def test_an_ivr_with_its_menu(api: Api) -> None:
    w = await _world(api)
    base = f"/tenants/{w['t']}/ivrs"
    sub = await api.create(base, {"name": "Sales", "options": {"0": {"type": "hangup"}}})
    body = {
        "name": "Main",
        "greeting_prompt_id": w["greeting"],
        "options": {
            "1": {"type": "extension", "id": w["ext"]},
            "2": {"type": "ivr", "id": sub["id"]},
            "9": {"type": "external", "number": "+74951234567"},
            "#": {"type": "hangup"},
        },
        "timeout_s": 7,
        "max_retries": 1,
        "default_destination": {"type": "extension", "id": w["ext"]},
        "direct_dial": True,
    }
    ivr = await api.create(base, body)
    assert ivr["options"]["2"] == {"type": "ivr", "id": sub["id"]}
    assert (ivr["timeout_s"], ivr["max_retries"], ivr["direct_dial"]) == (7, 1, True)
    r = await api.patch(
        f"{base}/{ivr['id']}", json={"timeout_s": 9, "invalid_prompt_id": w["greeting"]}
    )
    assert (
        r.status_code == 200
        and r.json()["timeout_s"] == 9
        and r.json()["options"] == ivr["options"]
    )
    listed = (await api.get(base)).json()
    assert [i["name"] for i in listed["items"]] == ["Main", "Sales"] and listed["total"] == 2
    # a DID of the tenant sends its calls to the menu
    await api.create(f"/operators/{w['op']}/numbers", {"number": "+74950000001"})
    pool = (await api.get(f"/operators/{w['op']}/numbers")).json()["items"]
    await api.patch(f"/operators/{w['op']}/numbers/{pool[0]['id']}", json={"tenant_id": w["t"]})
    did = f"/tenants/{w['t']}/numbers/{pool[0]['id']}"
    r = await api.patch(did, json={"destination": {"type": "ivr", "id": ivr["id"]}})
    assert r.status_code == 200, r.text
    # what is in use cannot be deleted under it
    for path, used in (
        (f"{base}/{ivr['id']}", "+74950000001"),  # the DID
        (f"{base}/{sub['id']}", "Main"),  # the other menu
        (f"/tenants/{w['t']}/extensions/{w['ext']}", "Main"),
    ):
        r = await api.delete(path)
        assert r.status_code == 409 and r.json()["error"]["code"] == "in_use", r.text
        assert used in r.json()["error"]["message"]
    r = await api.delete(f"/tenants/{w['t']}/prompts/{w['greeting']}")
    assert r.status_code == 409, r.text
    await api.patch(did, json={"destination": None})
    assert (await api.delete(f"{base}/{ivr['id']}")).status_code == 204
    assert (await api.delete(f"{base}/{sub['id']}")).status_code == 204


async def test_the_ivr_feature_gates_menus(api: Api) -> None:
    w = await _world(api)
    r = await api.post(f"/tenants/{w['plain']}/ivrs", json={"name": "Main"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "feature_disabled", r.text
    assert "no ivr feature" in r.json()["error"]["message"]
    assert (await api.get(f"/tenants/{w['plain']}/ivrs")).json()["total"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "M", "options": {"x": {"type": "hangup"}}}, "options"),
        ({"name": "M", "options": {"1": {"type": "fax"}}}, "options.1.type"),
        ({"name": "M", "options": {"1": {"type": "extension"}}}, "options.1"),
        ({"name": "M", "timeout_s": 0}, "timeout_s"),
        ({"name": "M", "max_retries": 10}, "max_retries"),
        ({"name": ""}, "name"),
        ({"name": "M", "colour": "red"}, "colour"),
    ],
)
async def test_bad_menus_are_422_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    w = await _world(api)
    r = await api.post(f"/tenants/{w['t']}/ivrs", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"]["field"].startswith(field), r.text


async def test_what_a_menu_names_must_be_the_tenants(api: Api) -> None:
    w = await _world(api)
    base = f"/tenants/{w['t']}/ivrs"
    for body, field in (
        ({"name": "M", "greeting_prompt_id": w["other_prompt"]}, "greeting_prompt_id"),
        ({"name": "M", "options": {"1": {"type": "extension", "id": w["other_ext"]}}}, "options.1"),
        ({"name": "M", "options": {"1": {"type": "ivr", "id": "ivr_nope"}}}, "options.1"),
        (
            {"name": "M", "default_destination": {"type": "voicemail", "id": "ext_nope"}},
            "default_destination",
        ),
    ):
        r = await api.post(base, json=body)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"]["field"] == field, r.text
    ivr = await api.create(base, {"name": "M"})
    # another tenant's admin: 404 for the menu, its tenant's menus are its own
    created = await api.create(
        f"/tenants/{w['plain']}/admins",
        {"username": "pa", "email": "pa@plain.example", "password": "pa-secret-pw1"},
    )
    other = await api.login(created["login"], "pa-secret-pw1")
    for method in ("GET", "PATCH", "DELETE"):
        r = await api.request(
            method, f"{base}/{ivr['id']}", other, json={} if method == "PATCH" else None
        )
        assert r.status_code == 404, (method, r.text)
    r = await api.get(f"/tenants/{w['plain']}/ivrs/{ivr['id']}", other)
    assert r.status_code == 404
    r = await api.post(base, json={"name": "M"})  # a name is unique in the tenant
    assert r.status_code == 409 and r.json()["error"]["code"] == "duplicate"


@pytest.fixture
async def ivr_tenant(api: Api) -> str:
    op = await api.operator()
    return str((await api.tenant(op["id"], "fuzz", features=["ivr"]))["id"])


_destinations = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["hangup", "extension", "ivr", "fax", "external"])}
    ),
    st.fixed_dictionaries({"type": st.just("external"), "number": st.text(max_size=20)}),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)
_bodies = st.one_of(
    st.fixed_dictionaries(
        {"name": st.text(max_size=30)},
        optional={
            "options": st.dictionaries(st.text(max_size=2), _destinations, max_size=4),
            "timeout_s": st.integers(-5, 100),
            "max_retries": st.integers(-2, 20),
            "direct_dial": st.one_of(st.booleans(), st.text(max_size=3)),
            "default_destination": st.one_of(st.none(), _destinations),
            "greeting_prompt_id": st.one_of(st.none(), st.text(max_size=45)),
        },
    ),
    st.lists(st.integers(), max_size=3),
    st.text(max_size=10),
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_bodies)
async def test_random_menus_never_give_a_5xx(api: Api, ivr_tenant: str, body: Any) -> None:
    r = await api.post(
        f"/tenants/{ivr_tenant}/ivrs",
        content=json.dumps(body),
        headers=api.admin | {"content-type": "application/json"},
    )
    assert r.status_code in (201, 409, 422), (body, r.text)
    if r.status_code != 201:
        assert r.json()["error"].keys() == {"code", "message", "details"}
