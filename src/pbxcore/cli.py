"""The ``pbxcore`` command line.

``pbxcore serve`` runs the server (today the SIP registrar); ``pbxcore g711`` prepares IVR
prompts: WAV (PCM16 mono 8 kHz) to raw ``.ul``/``.al`` files and back; ``pbxcore admin``
manages the platform's admins, operators and tenants in its database; ``pbxcore status``
prints the live counters of a running server.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal, NoReturn

import typer

from pbxcore import __version__, g711
from pbxcore.cli_admin import admin_app
from pbxcore.cli_demo import demo
from pbxcore.cli_serve import serve
from pbxcore.cli_status import status
from pbxcore.media import prompt as prompts
from pbxcore.wavfile import WavAudio, read_wav, write_wav

Law = Literal["ulaw", "alaw"]

app = typer.Typer(
    name="pbxcore",
    help="pbxcore: the core of a white-label cloud PBX.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
g711_app = typer.Typer(
    help="Convert telephony audio between WAV (PCM16 mono 8 kHz) and raw G.711 (.ul/.al).",
    no_args_is_help=True,
)
app.add_typer(g711_app, name="g711")
app.command("serve")(serve)
app.command("status")(status)
app.command("demo")(demo)
app.add_typer(admin_app, name="admin")

_EXTENSIONS: dict[str, Law] = {".ul": "ulaw", ".ulaw": "ulaw", ".al": "alaw", ".alaw": "alaw"}


def fail(message: str) -> NoReturn:
    """Print a one-line error and exit with status 2 (bad input), never a traceback."""
    typer.echo(f"pbxcore: error: {message}", err=True)
    raise typer.Exit(2)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pbxcore {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """pbxcore: the core of a white-label cloud PBX."""


def _law_of(path: Path, law: Law | None, role: str) -> Law:
    by_ext = _EXTENSIONS.get(path.suffix.lower())
    if law is None:
        if by_ext is None:
            fail(f"cannot tell the law of {role} {path}: pass --law ulaw|alaw or use .ul/.al")
        return by_ext
    if by_ext is not None and by_ext != law:
        fail(f"{role} {path} has a {path.suffix} extension but --law is {law}")
    return law


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")


def _read_telephony_wav(path: Path) -> WavAudio:
    _read(path)  # a clear message for a missing or unreadable file
    try:
        audio = read_wav(path)
        audio.require_telephony()
    except ValueError as exc:
        fail(f"{path}: {exc}")
    return audio


LawOption = Annotated[
    Law | None,
    typer.Option("--law", help="ulaw or alaw; by default taken from the .ul/.al extension."),
]
InPath = Annotated[Path, typer.Argument(help="Input file.")]
OutPath = Annotated[Path, typer.Argument(help="Output file.")]


@g711_app.command()
def encode(src: InPath, dst: OutPath, law: LawOption = None) -> None:
    """Encode a WAV (PCM16 mono 8 kHz) into a raw G.711 file (law = the output's)."""
    out_law = _law_of(dst, law, "output")
    audio = _read_telephony_wav(src)
    if audio.encoding == "pcm16":
        codes = g711.lin2ulaw(audio.data) if out_law == "ulaw" else g711.lin2alaw(audio.data)
    elif audio.encoding == out_law:
        codes = audio.data
    else:
        codes = g711.ulaw2alaw(audio.data) if out_law == "alaw" else g711.alaw2ulaw(audio.data)
    _write(dst, codes)


@g711_app.command()
def decode(src: InPath, dst: OutPath, law: LawOption = None) -> None:
    """Decode a raw G.711 file into a WAV (PCM16 mono 8 kHz) (law = the input's)."""
    in_law = _law_of(src, law, "input")
    codes = _read(src)
    pcm = g711.ulaw2lin(codes) if in_law == "ulaw" else g711.alaw2lin(codes)
    try:
        write_wav(dst, WavAudio("pcm16", 8000, 1, pcm))
    except OSError as exc:
        fail(f"cannot write {dst}: {exc.strerror or exc}")


@g711_app.command()
def transcode(src: InPath, dst: OutPath, law: LawOption = None) -> None:
    """Transcode a raw G.711 file into the other law (law = the output's)."""
    out_law = _law_of(dst, law, "output")
    in_law: Law = "alaw" if out_law == "ulaw" else "ulaw"
    by_ext = _EXTENSIONS.get(src.suffix.lower())
    if by_ext is not None and by_ext != in_law:
        fail(f"input {src} is already {by_ext}: nothing to transcode into {out_law}")
    codes = _read(src)
    _write(dst, g711.alaw2ulaw(codes) if out_law == "ulaw" else g711.ulaw2alaw(codes))


@g711_app.command()
def tone(
    dst: OutPath,
    freq: Annotated[float, typer.Option(help="Frequency in Hz (below 4000).")] = 440.0,
    seconds: Annotated[float, typer.Option(help="Duration in seconds.")] = 2.0,
    level: Annotated[float, typer.Option(help="Level in dBFS (0 or below).")] = -10.0,
) -> None:
    """Write a sine tone as a WAV (PCM16 mono 8 kHz): a test prompt."""
    try:
        prompt = prompts.tone(freq, seconds, level)
    except ValueError as exc:
        fail(str(exc))
    try:
        write_wav(dst, WavAudio("pcm16", 8000, 1, prompt.pcm16le))
    except OSError as exc:
        fail(f"cannot write {dst}: {exc.strerror or exc}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive
        sys.exit(130)
