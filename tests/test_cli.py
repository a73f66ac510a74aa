"""The pbxcore command line, run as a user runs it (the installed console script)."""

from __future__ import annotations

import io
import struct
import subprocess
import wave
from pathlib import Path

import pytest

from pbxcore import __version__, g711
from pbxcore.wavfile import read_wav
from tests.helpers import pbxcore_command


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pbxcore_command(), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def write_wav(path: Path, pcm: bytes, *, rate: int = 8000, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return path


PCM = struct.pack("<8h", 0, 100, -100, 1000, -1000, 30000, -30000, 5)


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"pbxcore {__version__}"


@pytest.mark.parametrize(("ext", "encode"), [(".ul", g711.lin2ulaw), (".al", g711.lin2alaw)])
def test_encode_decode(tmp_path: Path, ext: str, encode: object) -> None:
    src = write_wav(tmp_path / "in.wav", PCM)
    raw = tmp_path / f"out{ext}"
    result = run("g711", "encode", src, raw)
    assert result.returncode == 0, result.stderr
    assert raw.read_bytes() == encode(PCM)  # type: ignore[operator]
    back = tmp_path / "back.wav"
    assert run("g711", "decode", raw, back).returncode == 0
    with wave.open(str(back)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        decode = g711.ulaw2lin if ext == ".ul" else g711.alaw2lin
        assert w.readframes(100) == decode(raw.read_bytes())


def test_explicit_law_and_transcode(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "in.wav", PCM)
    raw = tmp_path / "prompt.raw"
    assert run("g711", "encode", src, raw, "--law", "ulaw").returncode == 0
    assert raw.read_bytes() == g711.lin2ulaw(PCM)
    alaw = tmp_path / "prompt.al"
    result = run("g711", "transcode", raw, alaw)
    assert result.returncode == 0, result.stderr
    assert alaw.read_bytes() == g711.ulaw2alaw(g711.lin2ulaw(PCM))
    back = tmp_path / "prompt.ul"
    assert run("g711", "transcode", alaw, back).returncode == 0
    assert back.read_bytes() == g711.alaw2ulaw(alaw.read_bytes())


def test_tone_is_a_telephony_wav(tmp_path: Path) -> None:
    out = tmp_path / "tone.wav"
    assert run("g711", "tone", out, "--freq", "1000", "--seconds", "0.5").returncode == 0
    audio = read_wav(out)
    audio.require_telephony()
    assert audio.frames == 4000
    samples = struct.unpack("<4000h", audio.data)
    assert max(samples) == pytest.approx(32767 * 10 ** (-10 / 20), abs=2)
    # 1000 Hz at 8 kHz: period of 8 samples
    assert samples[8] == samples[0] and samples[2] > 0 and samples[6] < 0


def _stereo(path: Path) -> Path:
    return write_wav(path, PCM, channels=2)


def _cd_rate(path: Path) -> Path:
    return write_wav(path, PCM, rate=44100)


def _text(path: Path) -> Path:
    path.write_text("this is not audio\n")
    return path


def _truncated(path: Path) -> Path:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(1000))
    path.write_bytes(buf.getvalue()[:-300])
    return path


def _missing(path: Path) -> Path:
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_stereo, "2 channels: mono audio is required"),
        (_cd_rate, "44100 Hz: 8000 Hz is required"),
        (_text, "not a WAV file"),
        (_truncated, "truncated"),
        (_missing, "No such file"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path: Path, make: object, message: str) -> None:
    src = make(tmp_path / "in.wav")  # type: ignore[operator]
    out = tmp_path / "out.ul"
    result = run("g711", "encode", src, out)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_law_contradicts_extension(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "in.wav", PCM)
    result = run("g711", "encode", src, tmp_path / "x.al", "--law", "ulaw")
    assert result.returncode == 2
    assert "extension but --law is ulaw" in result.stderr


def test_unknown_extension_needs_law(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "in.wav", PCM)
    result = run("g711", "encode", src, tmp_path / "x.bin")
    assert result.returncode == 2
    assert "pass --law" in result.stderr


def test_transcode_same_law_refused(tmp_path: Path) -> None:
    src = tmp_path / "a.ul"
    src.write_bytes(bytes(10))
    result = run("g711", "transcode", src, tmp_path / "b.ul")
    assert result.returncode == 2
    assert "already ulaw" in result.stderr


def test_unwritable_output(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "in.wav", PCM)
    result = run("g711", "encode", src, tmp_path / "no" / "such" / "dir.ul")
    assert result.returncode == 2
    assert "cannot write" in result.stderr


def test_usage_error_exit_2() -> None:
    result = run("g711", "encode")
    assert result.returncode == 2
    assert "Missing argument" in result.stderr
