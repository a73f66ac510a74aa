"""Prompts through the API (tenant scope), on both stores: upload of WAV in the three
telephony encodings, stored as μ-law, downloaded as WAV; precise refusals of other WAVs;
names unique per tenant; other tenants and operators see nothing (404)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbxcore import g711
from pbxcore.media.prompt import DEFAULT_PROMPTS, default_prompt, tone
from pbxcore.tenancy import rules
from pbxcore.wavfile import WavAudio, parse_wav, wav_bytes
from tests.api_fixtures import Api


def _wav(
    encoding: str = "pcm16", rate: int = 8000, channels: int = 1, seconds: float = 1.0
) -> bytes:
    pcm = tone(440, seconds).pcm16le
    if encoding == "ulaw":
        data = g711.lin2ulaw(pcm)
    elif encoding == "alaw":
        data = g711.lin2alaw(pcm)
    else:
        data = pcm
    if channels == 2:
        width = 2 if encoding == "pcm16" else 1
        data = b"".join(data[i : i + width] * 2 for i in range(0, len(data), width))
    return wav_bytes(WavAudio(encoding, rate, channels, data))  # type: ignore[arg-type]


async def _upload(api: Api, t: str, name: str, data: bytes, **kw: Any) -> Any:
    return await api.post(
        f"/tenants/{t}/prompts",
        data={"name": name},
        files={"file": ("p.wav", data, "audio/wav")},
        **kw,
    )


async def test_prompts_upload_list_download_rename_delete(api: Api) -> None:
    op = await api.operator()
    t = (await api.tenant(op["id"], "acme"))["id"]
    for encoding in ("pcm16", "ulaw", "alaw"):
        r = await _upload(api, t, f"greeting-{encoding}", _wav(encoding, seconds=1.5))
        assert r.status_code == 201, r.text
        assert r.json()["duration_s"] == 1.5 and r.json()["tenant_id"] == t
    listed = (await api.get(f"/tenants/{t}/prompts")).json()
    assert listed["total"] == 3 and [p["name"] for p in listed["items"]] == sorted(
        p["name"] for p in listed["items"]
    )
    first = listed["items"][0]
    r = await api.get(f"/tenants/{t}/prompts/{first['id']}/audio")
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    audio = parse_wav(r.content)
    assert (audio.encoding, audio.sample_rate, audio.channels, audio.frames) == (
        "ulaw",
        8000,
        1,
        12000,
    )
    r = await api.patch(f"/tenants/{t}/prompts/{first['id']}", json={"name": "welcome"})
    assert r.status_code == 200 and r.json()["name"] == "welcome"
    # a name is unique in the tenant
    r = await _upload(api, t, "welcome", _wav())
    assert r.status_code == 409 and r.json()["error"]["code"] == "duplicate"
    assert (await api.delete(f"/tenants/{t}/prompts/{first['id']}")).status_code == 204
    assert (await api.get(f"/tenants/{t}/prompts/{first['id']}")).status_code == 404
    assert (await api.get(f"/tenants/{t}/prompts")).json()["total"] == 2


async def test_bad_uploads_get_a_precise_422(api: Api) -> None:
    op = await api.operator()
    t = (await api.tenant(op["id"], "acme"))["id"]
    for data, message in (
        (_wav(rate=48000, channels=2), "2 channels: mono audio is required (convert it: sox"),
        (_wav(rate=16000), "sample rate is 16000 Hz: 8000 Hz is required (convert it"),
        (b"RIFF....WAVEjunk", "the file:"),
        (b"not a wav at all", "not a WAV file"),
        (wav_bytes(WavAudio("pcm16", 8000, 1, b"")), "no audio"),
        (_wav(seconds=rules.MAX_PROMPT_SECONDS + 1), f"at most {rules.MAX_PROMPT_SECONDS} s"),
    ):
        r = await _upload(api, t, "bad", data)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["details"]["field"] == "file" and message in error["message"], error
    r = await api.post(f"/tenants/{t}/prompts", data={"name": "no-file"})
    assert r.status_code == 422
    r = await api.post(f"/tenants/{t}/prompts", files={"file": ("p.wav", _wav(), "audio/wav")})
    assert r.status_code == 422  # no name
    # two hours of audio are refused before they are read: the body is too large
    big = b"\0" * (api.ctx.settings.max_upload_bytes + 1)
    r = await _upload(api, t, "two-hours", big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert (await api.get(f"/tenants/{t}/prompts")).json()["total"] == 0


async def test_another_tenants_prompts_are_not_found(api: Api) -> None:
    op = await api.operator()
    a = (await api.tenant(op["id"], "alpha"))["id"]
    b = (await api.tenant(op["id"], "beta"))["id"]
    prompt = (await _upload(api, a, "greeting", _wav())).json()
    created = await api.create(
        f"/tenants/{b}/admins",
        {"username": "bee", "email": "bee@beta.example", "password": "bee-secret-pw"},
    )
    bee = await api.login(created["login"], "bee-secret-pw")
    one = f"/tenants/{a}/prompts/{prompt['id']}"
    for path in (
        f"/tenants/{a}/prompts",
        one,
        f"{one}/audio",
        f"/tenants/{b}/prompts/{prompt['id']}",
    ):
        r = await api.get(path, headers=bee)
        assert r.status_code == 404, (path, r.text)
    assert (await _upload(api, a, "x", _wav(), headers=bee)).status_code == 404
    assert (
        await api.delete(f"/tenants/{b}/prompts/{prompt['id']}", headers=bee)
    ).status_code == 404
    assert (await api.get(f"/tenants/{a}/prompts/{prompt['id']}")).status_code == 200  # still there


def test_the_default_prompts_are_made_by_the_tone_generator() -> None:
    for name in DEFAULT_PROMPTS:
        prompt = default_prompt(name)
        assert prompt.duration > 0 and default_prompt(name) is prompt  # made once
    assert default_prompt("ringback").duration == 5.0


@pytest.fixture
async def fuzz_tenant(api: Api) -> str:
    op = await api.operator()
    return str((await api.tenant(op["id"], "fuzz"))["id"])


_uploads = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda head, tail: head + tail, st.just(_wav(seconds=0.01)[:44]), st.binary(max_size=200)
    ),
    st.builds(
        lambda wav, at, b: wav[:at] + bytes([b]) + wav[at + 1 :],
        st.just(_wav(seconds=0.01)),
        st.integers(0, 60),
        st.integers(0, 255),
    ),
)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=_uploads, name=st.text(max_size=250))
async def test_any_upload_is_201_or_a_4xx(
    api: Api, fuzz_tenant: str, data: bytes, name: str
) -> None:
    r = await _upload(api, fuzz_tenant, name, data)
    assert r.status_code in (201, 409, 422), r.text
    if r.status_code != 201:
        assert r.json()["error"].keys() == {"code", "message", "details"}
