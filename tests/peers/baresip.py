"""baresip phones for call tests: a config that plays a tone and records what it hears.

``make_phone`` writes a baresip folder (config, account, a tone WAV made with
``pbxcore g711 tone``); after the call, ``peak_hz`` of its ``dump-*-dec.wav`` says which
tone it received.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.helpers import pbxcore_command
from tests.peers.pbxserve import free_port

BARESIP_CALL_CONFIG = """\
poll_method\t\tepoll
sip_listen\t\t127.0.0.1:{port}
net_interface\t\t127.0.0.1
module_path\t\t/usr/lib/baresip/modules
module\t\t\tg711.so
module\t\t\taufile.so
module\t\t\tsndfile.so
module_tmp\t\taccount.so
module_app\t\tmenu.so
audio_source\t\taufile,{folder}/tone.wav
audio_player\t\taufile,{folder}/play.wav
audio_alert\t\taufile,{folder}/alert.wav
snd_path\t\t{folder}
"""


def make_phone(
    folder: Path,
    aor: str,
    password: str,
    *,
    outbound: str,
    tone: int,
    port: int | None = None,
    codec: str | None = None,
) -> Path:
    """A baresip folder for ``aor`` (``sip:101@acme.example``) that registers through
    ``outbound``, answers automatically and sends a ``tone`` Hz sine. Without ``port``, one
    whose next port is free too (baresip's TLS transport binds the port after ``port``)."""
    folder.mkdir(parents=True)
    if port is None:
        port = _free_pair()
    subprocess.run(
        [*pbxcore_command(), "g711", "tone", str(folder / "tone.wav"),
         "--freq", str(tone), "--seconds", "15"],
        check=True, capture_output=True,
    )  # fmt: skip
    (folder / "config").write_text(BARESIP_CALL_CONFIG.format(port=port, folder=folder))
    (folder / "accounts").write_text(
        f'<{aor};transport=udp>;outbound="{outbound}";'
        f"auth_pass={password};regint=60;answermode=auto"
        + (f";audio_codecs={codec}" if codec else "")
        + "\n"
    )
    (folder / "contacts").write_text("")
    return folder


def _free_pair() -> int:
    for _ in range(100):
        port = free_port()
        if port < 65535 and _free(port + 1):
            return port
    raise RuntimeError("no two free ports in a row")


def _free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def peak_hz(path: Path) -> tuple[float, float]:
    """The strongest frequency of a PCM16 WAV's second half, and its RMS level."""
    import numpy as np  # noqa: PLC0415

    from pbxcore.wavfile import read_wav  # noqa: PLC0415

    audio = read_wav(path)
    pcm = np.frombuffer(audio.data, dtype="<i2").astype(float)[audio.frames // 2 :]
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * audio.sample_rate / len(pcm)), float(
        np.sqrt(np.mean(pcm**2))
    )
