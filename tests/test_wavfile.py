"""WAV parsing and writing."""

from __future__ import annotations

import contextlib
import io
import struct
import wave

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbxcore import g711
from pbxcore.wavfile import WavAudio, parse_wav, wav_bytes


def stdlib_wav(pcm: bytes, *, rate: int = 8000, channels: int = 1, width: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def test_reads_what_stdlib_wave_writes() -> None:
    pcm = struct.pack("<4h", 0, 1000, -1000, 32767)
    audio = parse_wav(stdlib_wav(pcm))
    assert audio == WavAudio("pcm16", 8000, 1, pcm)
    assert audio.frames == 4
    assert audio.duration == pytest.approx(4 / 8000)
    audio.require_telephony()


def test_pcm_roundtrip_readable_by_stdlib_wave() -> None:
    pcm = bytes(range(200))
    data = wav_bytes(WavAudio("pcm16", 8000, 1, pcm))
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        assert w.readframes(1000) == pcm
    assert parse_wav(data).data == pcm


@pytest.mark.parametrize("encoding", ["ulaw", "alaw"])
def test_g711_wav_roundtrip(encoding: str) -> None:
    audio = WavAudio(encoding, 8000, 1, bytes(range(255)))  # type: ignore[arg-type]
    data = wav_bytes(audio)
    assert len(data) % 2 == 0  # odd data chunk is padded
    assert parse_wav(data) == audio


def test_skips_unknown_chunks() -> None:
    pcm = bytes(8)
    data = stdlib_wav(pcm)
    extra = b"LIST" + struct.pack("<I", 3) + b"abc\x00"
    spliced = data[:12] + extra + data[12:]
    spliced = spliced[:4] + struct.pack("<I", len(spliced) - 8) + spliced[8:]
    assert parse_wav(spliced).data == pcm


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a WAV file"),
        (b"hello world, this is text", "not a WAV file"),
        (b"RIFF\x00\x00\x00\x00WAVE", "no fmt chunk"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00", "fmt chunk is truncated"),
        (b"RIFF\x00\x00\x00\x00WAVEdata\x00\x00\x00\x00", "data chunk comes before the fmt"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_wav(data)


def test_truncated_data() -> None:
    data = stdlib_wav(bytes(1600))[:-100]
    with pytest.raises(ValueError, match="truncated: data chunk declares 1600 bytes, 1500 present"):
        parse_wav(data)


def test_no_data_chunk() -> None:
    data = stdlib_wav(bytes(16))
    header_only = data[: data.index(b"data")]
    with pytest.raises(ValueError, match="no data chunk"):
        parse_wav(header_only)


def test_not_telephony() -> None:
    with pytest.raises(ValueError, match="2 channels: mono audio is required"):
        parse_wav(stdlib_wav(bytes(16), channels=2)).require_telephony()
    with pytest.raises(ValueError, match="44100 Hz: 8000 Hz is required"):
        parse_wav(stdlib_wav(bytes(16), rate=44100)).require_telephony()
    with pytest.raises(ValueError, match="8-bit PCM: 16-bit PCM is required"):
        parse_wav(stdlib_wav(bytes(16), width=1))
    with pytest.raises(ValueError, match="middle of a sample frame"):
        parse_wav(wav_bytes(WavAudio("pcm16", 8000, 1, bytes(3))))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_only_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        parse_wav(b"RIFF\x00\x00\x00\x00WAVE" + data)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["pcm16", "ulaw", "alaw"]),
    st.sampled_from([8000, 16000]),
    st.integers(1, 2),
    st.binary(max_size=100),
    st.data(),
)
def test_roundtrip_and_mutations(
    encoding: str, rate: int, channels: int, payload: bytes, data: st.DataObject
) -> None:
    block = (2 if encoding == "pcm16" else 1) * channels
    payload = payload[: len(payload) - len(payload) % block]
    audio = WavAudio(encoding, rate, channels, payload)  # type: ignore[arg-type]
    raw = wav_bytes(audio)
    assert parse_wav(raw) == audio
    # flip a byte or cut the file anywhere: a ValueError or a parse, never anything else
    pos = data.draw(st.integers(0, len(raw) - 1))
    mutated = raw[:pos] + bytes([raw[pos] ^ data.draw(st.integers(1, 255))]) + raw[pos + 1 :]
    for candidate in (mutated, raw[:pos]):
        with contextlib.suppress(ValueError):
            parse_wav(candidate)


@settings(max_examples=200, deadline=None)
@given(
    encoding=st.sampled_from(["pcm16", "ulaw", "alaw"]),
    data=st.binary(max_size=400),
)
def test_pcm16_decodes_any_encoding(encoding: str, data: bytes) -> None:
    if encoding == "pcm16":
        data = data[: len(data) & ~1]
    audio = parse_wav(wav_bytes(WavAudio(encoding, 8000, 1, data)))  # type: ignore[arg-type]
    expected = {"pcm16": data, "ulaw": g711.ulaw2lin(data), "alaw": g711.alaw2lin(data)}
    assert audio.pcm16() == expected[encoding]
    assert len(audio.pcm16()) == 2 * audio.frames
