"""G.711: the native module and the pure-Python reference run the same tests.

Bit-exactness is checked against the ITU-T G.191 vectors in tests/data/g711/
(copied from ITU-T G.191, see tests/data/SOURCES.md).
"""

from __future__ import annotations

import array
import platform
import struct
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pbxcore._g711 as native
import pbxcore._g711_ref as reference
from pbxcore import g711
from tests.helpers import require_testdata

IMPLEMENTATIONS = [pytest.param(native, id="native"), pytest.param(reference, id="reference")]


def _words(path_name: str) -> list[int]:
    """A G.191 file of little-endian 16-bit words."""
    data = require_testdata("g711", path_name).read_bytes()
    return list(struct.unpack(f"<{len(data) // 2}h", data))


@pytest.fixture(scope="module")
def sweep() -> bytes:
    data = require_testdata("g711", "sweep.src").read_bytes()
    assert len(data) == 65536 * 2
    # every int16 value exactly once
    assert sorted(struct.unpack("<65536h", data)) == list(range(-32768, 32768))
    return data


def _codes(words: list[int]) -> bytes:
    assert all(0 <= w <= 255 for w in words)
    return bytes(words)


@pytest.fixture(params=IMPLEMENTATIONS, scope="module")
def impl(request: pytest.FixtureRequest) -> ModuleType:
    module: ModuleType = request.param
    return module


class TestG191:
    """Bit-exact against ITU-T G.191 for every PCM16 input and every code."""

    def test_ulaw_encode_all_inputs(self, impl: ModuleType, sweep: bytes) -> None:
        assert impl.lin2ulaw(sweep) == _codes(_words("sweep-r.u"))

    def test_alaw_encode_all_inputs(self, impl: ModuleType, sweep: bytes) -> None:
        assert impl.lin2alaw(sweep) == _codes(_words("sweep-r.a"))

    def test_ulaw_encode_decode_all_inputs(self, impl: ModuleType, sweep: bytes) -> None:
        expected = require_testdata("g711", "sweep-r.u-u").read_bytes()
        assert impl.ulaw2lin(impl.lin2ulaw(sweep)) == expected

    def test_alaw_encode_decode_all_inputs(self, impl: ModuleType, sweep: bytes) -> None:
        expected = require_testdata("g711", "sweep-r.a-a").read_bytes()
        assert impl.alaw2lin(impl.lin2alaw(sweep)) == expected

    @pytest.mark.parametrize("law", ["u", "a"])
    def test_decode_all_256_codes(self, impl: ModuleType, sweep: bytes, law: str) -> None:
        # every code appears in the G.191 encode output; its decoded value is given by the
        # encode-decode file at the same positions
        codes = _words(f"sweep-r.{law}")
        decoded = _words(f"sweep-r.{law}-{law}")
        table = dict(zip(codes, decoded, strict=True))
        assert sorted(table) == list(range(256))
        decode = impl.ulaw2lin if law == "u" else impl.alaw2lin
        got = struct.unpack("<256h", decode(bytes(range(256))))
        assert list(got) == [table[c] for c in range(256)]


class TestApi:
    def test_width_must_be_2(self, impl: ModuleType) -> None:
        for fn in (impl.lin2ulaw, impl.lin2alaw, impl.ulaw2lin, impl.alaw2lin):
            assert fn(b"\x00\x00", 2) is not None
            for width in (1, 3, 4):
                with pytest.raises(ValueError, match=r"width=2.*width=" + str(width)):
                    fn(b"\x00\x00\x00\x00", width)

    def test_odd_pcm_length(self, impl: ModuleType) -> None:
        for fn in (impl.lin2ulaw, impl.lin2alaw):
            with pytest.raises(ValueError, match="odd length of 3 bytes"):
                fn(b"\x00\x01\x02")

    def test_empty(self, impl: ModuleType) -> None:
        for fn in (impl.lin2ulaw, impl.lin2alaw, impl.ulaw2lin, impl.alaw2lin):
            assert fn(b"") == b""
        assert impl.ulaw2alaw(b"") == b""
        assert impl.alaw2ulaw(b"") == b""

    def test_not_bytes_like(self, impl: ModuleType) -> None:
        for bad in ("abc", 12, None, [1, 2]):
            with pytest.raises(TypeError):
                impl.lin2ulaw(bad)
            with pytest.raises(TypeError):
                impl.ulaw2alaw(bad)

    def test_bytes_like_inputs_agree(self, impl: ModuleType, sweep: bytes) -> None:
        expected = impl.lin2ulaw(sweep)
        samples = np.frombuffer(sweep, dtype="<i2")
        assert impl.lin2ulaw(bytearray(sweep)) == expected
        assert impl.lin2ulaw(memoryview(sweep)) == expected
        assert impl.lin2ulaw(samples) == expected
        assert impl.lin2ulaw(array.array("h", samples.tolist())) == expected
        codes = np.frombuffer(expected, dtype=np.uint8)
        assert impl.ulaw2lin(codes) == impl.ulaw2lin(expected)
        assert impl.ulaw2alaw(codes) == impl.ulaw2alaw(expected)

    def test_unaligned_memoryview(self, impl: ModuleType, sweep: bytes) -> None:
        # a PCM buffer at an odd address must not be misread
        shifted = memoryview(b"\x00" + sweep)[1:]
        assert impl.lin2alaw(shifted) == impl.lin2alaw(sweep)

    def test_outputs_are_bytes(self, impl: ModuleType) -> None:
        assert type(impl.lin2ulaw(bytearray(4))) is bytes
        assert type(impl.ulaw2alaw(bytearray(4))) is bytes

    def test_into_variants(self, impl: ModuleType, sweep: bytes) -> None:
        pcm = sweep[:320]
        cases = [
            (impl.lin2ulaw_into, impl.lin2ulaw, pcm, 160),
            (impl.lin2alaw_into, impl.lin2alaw, pcm, 160),
            (impl.ulaw2lin_into, impl.ulaw2lin, bytes(range(160)), 320),
            (impl.alaw2lin_into, impl.alaw2lin, bytes(range(160)), 320),
            (impl.ulaw2alaw_into, impl.ulaw2alaw, bytes(range(160)), 160),
            (impl.alaw2ulaw_into, impl.alaw2ulaw, bytes(range(160)), 160),
        ]
        for into, plain, src, size in cases:
            dst = bytearray(size + 7)
            assert into(src, dst) == size
            assert bytes(dst[:size]) == plain(src)
            assert dst[size:] == bytearray(7)  # nothing written past the result
            out = np.zeros(size, dtype=np.uint8)
            assert into(src, out) == size
            assert out.tobytes() == plain(src)

    def test_decode_and_transcode_odd_lengths_unaligned(self, impl: ModuleType) -> None:
        # every tail of the 4- and 8-code steps, at odd and even addresses
        codes = bytes(np.random.default_rng(8).integers(0, 256, 300, dtype=np.uint8))
        for fn, into, per_code in (
            (impl.ulaw2lin, impl.ulaw2lin_into, 2),
            (impl.alaw2lin, impl.alaw2lin_into, 2),
            (impl.ulaw2alaw, impl.ulaw2alaw_into, 1),
            (impl.alaw2ulaw, impl.alaw2ulaw_into, 1),
        ):
            table = fn(bytes(range(256)))
            for n in [*range(20), 159, 160, 161]:
                window = codes[n : 2 * n]
                expected = b"".join(table[c * per_code : (c + 1) * per_code] for c in window)
                for offset in (0, 1, 3):
                    src = memoryview(bytearray(offset) + window)[offset:]
                    assert fn(src) == expected, (fn, n, offset)
                    dst_buf = bytearray(b"\xee" * (offset + len(expected) + 9))
                    assert into(src, memoryview(dst_buf)[offset:]) == len(expected)
                    assert dst_buf[offset : offset + len(expected)] == expected
                    assert dst_buf[:offset] + dst_buf[offset + len(expected) :] == (
                        b"\xee" * (offset + 9)
                    )

    def test_transcode_in_place(self, impl: ModuleType) -> None:
        codes = bytes(np.random.default_rng(9).integers(0, 256, 203, dtype=np.uint8))
        for n in (0, 7, 8, 9, 203):
            buf = bytearray(codes[:n])
            assert impl.ulaw2alaw_into(buf, buf) == n
            assert bytes(buf) == impl.ulaw2alaw(codes[:n])
            assert impl.alaw2ulaw_into(buf, buf) == n
            assert bytes(buf) == impl.alaw2ulaw(impl.ulaw2alaw(codes[:n]))

    def test_into_too_small(self, impl: ModuleType) -> None:
        with pytest.raises(ValueError, match="dst too small: needs 160 bytes, has 159"):
            impl.lin2ulaw_into(bytes(320), bytearray(159))
        with pytest.raises(ValueError, match="dst too small: needs 320 bytes, has 100"):
            impl.ulaw2lin_into(bytes(160), bytearray(100))

    def test_into_readonly_dst(self, impl: ModuleType) -> None:
        with pytest.raises(TypeError):
            impl.ulaw2alaw_into(bytes(10), bytes(10))

    def test_into_odd_pcm(self, impl: ModuleType) -> None:
        with pytest.raises(ValueError, match="odd length"):
            impl.lin2alaw_into(bytes(5), bytearray(10))


def _step_ulaw(x: int) -> int:
    """Quantization step of the μ-law segment holding x (G.711, 14-bit scale × 4)."""
    magnitude = min(abs(x if x >= 0 else ~x) >> 2, 8158)
    for seg, top in enumerate((30, 94, 222, 478, 990, 2014, 4062, 8158)):
        if magnitude <= top:
            return 8 << seg
    raise AssertionError


def _step_alaw(x: int) -> int:
    magnitude = abs(x if x >= 0 else ~x) >> 4
    return 32 if magnitude < 32 else 16 << (magnitude.bit_length() - 5)


int16s = st.lists(st.integers(-32768, 32767), max_size=400)


class TestProperties:
    @settings(max_examples=300, deadline=None)
    @given(samples=int16s)
    def test_ulaw_quantization(self, impl: ModuleType, samples: list[int]) -> None:
        pcm = struct.pack(f"<{len(samples)}h", *samples)
        back = struct.unpack(f"<{len(samples)}h", impl.ulaw2lin(impl.lin2ulaw(pcm)))
        for x, y in zip(samples, back, strict=True):
            if -32124 <= x <= 32124:  # beyond the top decision level μ-law clips
                assert abs(x - y) <= _step_ulaw(x) // 2 + 1

    @settings(max_examples=300, deadline=None)
    @given(samples=int16s)
    def test_alaw_quantization(self, impl: ModuleType, samples: list[int]) -> None:
        pcm = struct.pack(f"<{len(samples)}h", *samples)
        back = struct.unpack(f"<{len(samples)}h", impl.alaw2lin(impl.lin2alaw(pcm)))
        for x, y in zip(samples, back, strict=True):
            if -32256 <= x <= 32255:
                assert abs(x - y) <= _step_alaw(x) // 2

    @settings(max_examples=200, deadline=None)
    @given(samples=int16s)
    def test_encode_decode_is_idempotent(self, impl: ModuleType, samples: list[int]) -> None:
        pcm = struct.pack(f"<{len(samples)}h", *samples)
        for enc, dec in ((impl.lin2ulaw, impl.ulaw2lin), (impl.lin2alaw, impl.alaw2lin)):
            once = dec(enc(pcm))
            assert dec(enc(once)) == once

    def test_codes_survive_decode_encode(self, impl: ModuleType) -> None:
        codes = bytes(range(256))
        assert impl.lin2alaw(impl.alaw2lin(codes)) == codes
        # μ-law has two zeros: 0x7F (-0) decodes to 0, which encodes as 0xFF (+0)
        expected = bytes(0xFF if c == 0x7F else c for c in range(256))
        assert impl.lin2ulaw(impl.ulaw2lin(codes)) == expected

    def test_transcode_is_decode_then_encode(self, impl: ModuleType) -> None:
        codes = bytes(range(256))
        assert impl.ulaw2alaw(codes) == impl.lin2alaw(impl.ulaw2lin(codes))
        assert impl.alaw2ulaw(codes) == impl.lin2ulaw(impl.alaw2lin(codes))

    @settings(max_examples=200, deadline=None)
    @given(codes=st.binary(max_size=400))
    def test_transcoding_is_stable(self, impl: ModuleType, codes: bytes) -> None:
        # after one round trip, further round trips change nothing
        u1 = impl.alaw2ulaw(impl.ulaw2alaw(codes))
        assert impl.alaw2ulaw(impl.ulaw2alaw(u1)) == u1
        a1 = impl.ulaw2alaw(impl.alaw2ulaw(codes))
        assert impl.ulaw2alaw(impl.alaw2ulaw(a1)) == a1
        # and a transcoded signal stays within a step of the original
        pcm = struct.unpack(f"<{len(codes)}h", impl.ulaw2lin(codes))
        via_a = struct.unpack(f"<{len(codes)}h", impl.alaw2lin(impl.ulaw2alaw(codes)))
        for x, y in zip(pcm, via_a, strict=True):
            assert abs(x - y) <= max(_step_alaw(x), _step_ulaw(x))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=1000))
def test_native_matches_reference(data: bytes) -> None:
    pcm = data[: len(data) & ~1]
    assert native.lin2ulaw(pcm) == reference.lin2ulaw(pcm)
    assert native.lin2alaw(pcm) == reference.lin2alaw(pcm)
    assert native.ulaw2lin(data) == reference.ulaw2lin(data)
    assert native.alaw2lin(data) == reference.alaw2lin(data)
    assert native.ulaw2alaw(data) == reference.ulaw2alaw(data)
    assert native.alaw2ulaw(data) == reference.alaw2ulaw(data)


# ---- every compiled encode kernel, forced in turn ----

ENCODE_VARIANTS = native._encode_variants()


@pytest.fixture(params=ENCODE_VARIANTS)
def encode_variant(request: pytest.FixtureRequest) -> Iterator[str]:
    default = native._encode_variant()
    native._set_encode_variant(request.param)
    try:
        yield request.param
    finally:
        native._set_encode_variant(default)


def _encoders(law: str) -> tuple[Callable[[object], bytes], Callable[[object, object], int]]:
    if law == "u":
        return native.lin2ulaw, native.lin2ulaw_into
    return native.lin2alaw, native.lin2alaw_into


class TestEncodeVariants:
    """Each kernel (portable, SSE2, AVX2: what this CPU runs) bit-exact with G.191."""

    def test_default_is_the_best_supported(self) -> None:
        assert native._encode_variant() == ENCODE_VARIANTS[0]
        assert "portable" in ENCODE_VARIANTS
        assert ENCODE_VARIANTS[-1] == "portable"
        if platform.machine().lower() in ("x86_64", "amd64"):
            assert "sse2" in ENCODE_VARIANTS

    def test_avx2_is_used_where_the_cpu_has_it(self) -> None:
        cpuinfo = Path("/proc/cpuinfo")
        if platform.machine() != "x86_64" or not cpuinfo.exists():
            pytest.skip("needs Linux on x86-64 to read the CPU flags")
        flags = next(
            line.split(":", 1)[1].split()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("flags")
        )
        assert ("avx2" in ENCODE_VARIANTS) == ("avx2" in flags)

    def test_unknown_variant(self) -> None:
        with pytest.raises(ValueError, match=r"unknown G\.711 encode variant 'neon'"):
            native._set_encode_variant("neon")
        assert native._encode_variant() == ENCODE_VARIANTS[0]

    @pytest.mark.parametrize("law", ["u", "a"])
    def test_all_inputs(self, encode_variant: str, sweep: bytes, law: str) -> None:
        assert native._encode_variant() == encode_variant
        encode, encode_into = _encoders(law)
        expected = _codes(_words(f"sweep-r.{law}"))
        assert encode(sweep) == expected
        dst = bytearray(65536)
        assert encode_into(sweep, dst) == 65536
        assert dst == expected

    @pytest.mark.parametrize("law", ["u", "a"])
    def test_odd_lengths_and_unaligned_buffers(
        self, encode_variant: str, sweep: bytes, law: str
    ) -> None:
        encode, encode_into = _encoders(law)
        # G.191's code for every sample value, and the sweep in a scrambled order so that each
        # window holds loud and quiet samples of both signs
        g191 = _codes(_words(f"sweep-r.{law}"))
        samples = np.frombuffer(sweep, dtype="<i2")
        code_of = np.empty(65536, dtype=np.uint8)
        code_of[samples.astype(np.uint16)] = np.frombuffer(g191, dtype=np.uint8)
        scrambled = np.random.default_rng(711).permutation(samples).astype("<i2")
        # every tail of the 16- and 32-sample vector steps, and a few packet-sized lengths
        for n in [*range(100), 159, 160, 161, 1023, 4097]:
            start = (n * 7919) % (65536 - n)
            window = scrambled[start : start + n]
            expected = code_of[window.astype(np.uint16)].tobytes()
            for offset in range(4):
                src_buf = bytearray(offset) + window.tobytes()
                src = memoryview(src_buf)[offset:]
                assert encode(src) == expected, (n, offset)
                dst_buf = bytearray(b"\xee" * (2 * offset + n + 40))
                dst = memoryview(dst_buf)[offset:]
                assert encode_into(src, dst) == n
                assert dst_buf[offset : offset + n] == expected, (n, offset)
                # nothing written before or after the result
                assert dst_buf[:offset] == b"\xee" * offset
                assert dst_buf[offset + n :] == b"\xee" * (offset + 40)


def test_public_module_is_native() -> None:
    assert g711.lin2ulaw is native.lin2ulaw
    assert set(g711.__all__) == {n for n in dir(native) if not n.startswith("_")} - {"test"}


def _audioop() -> ModuleType | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop  # noqa: PLC0415

            return audioop
        except ImportError:
            return None


def test_audioop_differs_from_g191_on_508_inputs(sweep: bytes) -> None:
    # on Python 3.13+ the test extra installs audioop-lts: CPython's module, kept as it was
    audioop = _audioop()
    assert audioop is not None, "audioop is missing (Python 3.13+: pip install '.[test]')"
    g191 = _codes(_words("sweep-r.u"))
    theirs = audioop.lin2ulaw(sweep, 2)
    samples = struct.unpack("<65536h", sweep)
    differ = [i for i in range(65536) if theirs[i] != g191[i]]
    assert len(differ) == 508
    assert all(samples[i] < 0 for i in differ)
    assert all(abs(theirs[i] - g191[i]) == 1 for i in differ)
    ours = g711.lin2ulaw(sweep)
    assert all(ours[i] == g191[i] for i in differ)
    # A-law and both decoders agree with audioop everywhere
    assert audioop.lin2alaw(sweep, 2) == g711.lin2alaw(sweep)
    assert audioop.ulaw2lin(bytes(range(256)), 2) == g711.ulaw2lin(bytes(range(256)))
    assert audioop.alaw2lin(bytes(range(256)), 2) == g711.alaw2lin(bytes(range(256)))
