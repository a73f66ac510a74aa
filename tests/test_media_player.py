"""Prompts: WAV files (through pbxcore.wavfile) and raw G.711/PCM16 for the native player."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbxcore import g711
from pbxcore.media import Prompt
from pbxcore.wavfile import WavAudio, wav_bytes, write_wav


def native(pcm16le: bytes) -> bytes:
    if sys.byteorder == "little":
        return pcm16le
    samples = struct.unpack(f"<{len(pcm16le) // 2}h", pcm16le)
    return struct.pack(f"={len(samples)}h", *samples)


PCM = struct.pack("<320h", *[(n * 91) % 4000 - 2000 for n in range(320)])


@pytest.mark.parametrize(
    ("encoding", "data", "expected"),
    [
        ("pcm16", PCM, PCM),
        ("ulaw", g711.lin2ulaw(PCM), g711.ulaw2lin(g711.lin2ulaw(PCM))),
        ("alaw", g711.lin2alaw(PCM), g711.alaw2lin(g711.lin2alaw(PCM))),
    ],
)
def test_prompt_from_each_wav_encoding(tmp_path: Path, encoding: str, data: bytes, expected):
    path = tmp_path / f"{encoding}.wav"
    write_wav(path, WavAudio(encoding, 8000, 1, data))  # type: ignore[arg-type]
    prompt = Prompt.from_wav(path)
    assert prompt.pcm16 == native(expected)
    assert prompt.duration == pytest.approx(0.04)


def test_wav_errors_name_the_file(tmp_path: Path):
    path = tmp_path / "greeting.wav"
    write_wav(path, WavAudio("pcm16", 16000, 1, PCM))
    with pytest.raises(ValueError, match=r"greeting\.wav: WAV sample rate is 16000 Hz"):
        Prompt.from_wav(path)
    write_wav(path, WavAudio("ulaw", 8000, 2, bytes(8)))
    with pytest.raises(ValueError, match="2 channels: mono audio is required"):
        Prompt.from_wav(path)
    with pytest.raises(ValueError, match="upload: not a WAV file"):
        Prompt.from_wav_bytes(b"ID3 an mp3", name="upload")


def test_raw_prompts():
    assert Prompt.from_pcm16(PCM).pcm16 == native(PCM)
    assert Prompt.from_ulaw(g711.lin2ulaw(PCM)).pcm16 == native(g711.ulaw2lin(g711.lin2ulaw(PCM)))
    with pytest.raises(ValueError, match="odd length"):
        Prompt.from_pcm16(b"\x00\x01\x02")


@settings(max_examples=200, deadline=None)
@given(encoding=st.sampled_from(["pcm16", "ulaw", "alaw"]), data=st.binary(max_size=600))
def test_any_telephony_wav_round_trips_into_a_prompt(encoding: str, data: bytes):
    if encoding == "pcm16":
        data = data[: len(data) & ~1]
    audio = WavAudio(encoding, 8000, 1, data)  # type: ignore[arg-type]
    assert Prompt.from_wav_bytes(wav_bytes(audio)).pcm16 == native(audio.pcm16())


@settings(max_examples=300, deadline=None)
@given(
    fmt=st.tuples(
        st.sampled_from([1, 6, 7, 3, 0xFFFE]),
        st.integers(0, 3),
        st.sampled_from([0, 8000, 16000]),
        st.integers(0, 4),
        st.sampled_from([8, 16, 24]),
    ),
    body=st.binary(max_size=64),
    cut=st.integers(0, 80),
)
def test_fuzz_prompt_from_wav_bytes(fmt, body, cut):
    tag, channels, rate, align, bits = fmt
    chunk = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    data = b"WAVEfmt " + struct.pack("<I", 16) + chunk + b"data" + struct.pack("<I", len(body))
    raw = (b"RIFF" + struct.pack("<I", len(data) + len(body)) + data + body)[: 44 + 64 - cut]
    try:
        prompt = Prompt.from_wav_bytes(raw)
    except ValueError as exc:
        assert str(exc).startswith("WAV data: ")
        return
    assert len(prompt.pcm16) % 2 == 0 and (channels, rate) == (1, 8000)
