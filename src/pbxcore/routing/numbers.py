"""Number formats for trunks and caller-ID rules.

E.164 here is ``+`` and 7-15 digits, the first not 0 (ITU-T E.164 caps a number at 15 digits).
A :class:`Country` is the numbering profile that says what "national" means for a trunk:
the calling code, the trunk prefix dialled before national numbers and the prefix dialled
before international ones (Russia: ``7``, ``8``, ``810``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

__all__ = [
    "CALLING_CODES",
    "RUSSIA",
    "CallerId",
    "CallerIdMode",
    "CallerIdRule",
    "Country",
    "NumberFormat",
    "calling_code",
    "format_number",
    "is_e164",
]

NumberFormat = Literal["e164", "e164_digits", "national", "international_00"]
CallerIdMode = Literal["pass", "fixed", "from_did"]

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")

# ISO 3166 region -> ITU calling code (from libphonenumber's metadata; the test suite checks
# this table against the phonenumbers package)
_CODES = """
AC:247 AD:376 AE:971 AF:93 AG:1 AI:1 AL:355 AM:374 AO:244 AR:54 AS:1 AT:43 AU:61 AW:297
AX:358 AZ:994 BA:387 BB:1 BD:880 BE:32 BF:226 BG:359 BH:973 BI:257 BJ:229 BL:590 BM:1
BN:673 BO:591 BQ:599 BR:55 BS:1 BT:975 BW:267 BY:375 BZ:501 CA:1 CC:61 CD:243 CF:236
CG:242 CH:41 CI:225 CK:682 CL:56 CM:237 CN:86 CO:57 CR:506 CU:53 CV:238 CW:599 CX:61
CY:357 CZ:420 DE:49 DJ:253 DK:45 DM:1 DO:1 DZ:213 EC:593 EE:372 EG:20 EH:212 ER:291 ES:34
ET:251 FI:358 FJ:679 FK:500 FM:691 FO:298 FR:33 GA:241 GB:44 GD:1 GE:995 GF:594 GG:44
GH:233 GI:350 GL:299 GM:220 GN:224 GP:590 GQ:240 GR:30 GT:502 GU:1 GW:245 GY:592 HK:852
HN:504 HR:385 HT:509 HU:36 ID:62 IE:353 IL:972 IM:44 IN:91 IO:246 IQ:964 IR:98 IS:354
IT:39 JE:44 JM:1 JO:962 JP:81 KE:254 KG:996 KH:855 KI:686 KM:269 KN:1 KP:850 KR:82 KW:965
KY:1 KZ:7 LA:856 LB:961 LC:1 LI:423 LK:94 LR:231 LS:266 LT:370 LU:352 LV:371 LY:218 MA:212
MC:377 MD:373 ME:382 MF:590 MG:261 MH:692 MK:389 ML:223 MM:95 MN:976 MO:853 MP:1 MQ:596
MR:222 MS:1 MT:356 MU:230 MV:960 MW:265 MX:52 MY:60 MZ:258 NA:264 NC:687 NE:227 NF:672
NG:234 NI:505 NL:31 NO:47 NP:977 NR:674 NU:683 NZ:64 OM:968 PA:507 PE:51 PF:689 PG:675
PH:63 PK:92 PL:48 PM:508 PR:1 PS:970 PT:351 PW:680 PY:595 QA:974 RE:262 RO:40 RS:381 RU:7
RW:250 SA:966 SB:677 SC:248 SD:249 SE:46 SG:65 SH:290 SI:386 SJ:47 SK:421 SL:232 SM:378
SN:221 SO:252 SR:597 SS:211 ST:239 SV:503 SX:1 SY:963 SZ:268 TA:290 TC:1 TD:235 TG:228
TH:66 TJ:992 TK:690 TL:670 TM:993 TN:216 TO:676 TR:90 TT:1 TV:688 TW:886 TZ:255 UA:380
UG:256 US:1 UY:598 UZ:998 VA:39 VC:1 VE:58 VG:1 VI:1 VN:84 VU:678 WF:681 WS:685 XK:383
YE:967 YT:262 ZA:27 ZM:260 ZW:263
"""
CALLING_CODES: Mapping[str, str] = dict(item.split(":") for item in _CODES.split())


def calling_code(country: str) -> str:
    """The calling code of an ISO 3166 region (``"RU"`` -> ``"7"``); ValueError if unknown."""
    try:
        return CALLING_CODES[country.upper()]
    except KeyError:
        raise ValueError(f"unknown country {country!r} (an ISO 3166 region code)") from None


def is_e164(number: str) -> bool:
    """Whether ``number`` is ``+`` and 7-15 digits, the first not 0."""
    return _E164.fullmatch(number) is not None


@dataclass(frozen=True, slots=True)
class Country:
    """What "national" means: calling code, trunk prefix and international prefix."""

    code: str
    trunk_prefix: str
    international_prefix: str

    def __post_init__(self) -> None:
        for name in ("code", "trunk_prefix", "international_prefix"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.isascii() or not value.isdigit():
                raise ValueError(f"{name} must be digits, got {value!r}")


RUSSIA = Country(code="7", trunk_prefix="8", international_prefix="810")

_FORMATS = frozenset(get_args(NumberFormat))


def _check_e164(number: str, what: str = "number") -> str:
    if not isinstance(number, str):
        raise TypeError(f"{what} must be str, not {type(number).__name__}")
    if _E164.fullmatch(number) is None:
        raise ValueError(f"{what} {number!r} is not E.164 ('+' and 7-15 digits)")
    return number


def format_number(e164: str, fmt: NumberFormat, *, country: Country = RUSSIA) -> str:
    """``e164`` as a trunk expects it.

    ``e164``: ``+74951234567``; ``e164_digits``: ``74951234567``; ``national``: the trunk
    prefix and the national number for the country's own numbers (``84951234567``), the
    international prefix and all digits for others (``81049301234567``);
    ``international_00``: ``0074951234567``.
    """
    _check_e164(e164)
    digits = e164[1:]
    if fmt == "e164":
        return e164
    if fmt == "e164_digits":
        return digits
    if fmt == "international_00":
        return "00" + digits
    if fmt == "national":
        if digits.startswith(country.code):
            return country.trunk_prefix + digits[len(country.code) :]
        return country.international_prefix + digits
    raise ValueError(f"unknown number format {fmt!r}; expected one of {sorted(_FORMATS)}")


@dataclass(frozen=True, slots=True)
class CallerId:
    """The caller ID a trunk presents: the number in the trunk's format, and whether the
    presentation is restricted (sent in P-Asserted-Identity with ``Privacy: id``)."""

    number: str
    restricted: bool = False

    def to_json(self) -> dict[str, Any]:
        """The caller ID as JSON-ready values."""
        return {"number": self.number, "restricted": self.restricted}


@dataclass(frozen=True, slots=True)
class CallerIdRule:
    """A trunk's caller-ID rule (the API's ``caller_id``).

    ``pass``: the caller's own number, or the tenant's DID when the caller is an extension;
    ``fixed``: always ``fixed_number``; ``from_did``: the tenant's DID. ``format`` is the
    number format the trunk wants; ``restricted`` hides the number on every call.
    """

    mode: CallerIdMode = "pass"
    fixed_number: str | None = None
    format: NumberFormat = "e164"
    restricted: bool = False

    def __post_init__(self) -> None:
        if self.mode not in get_args(CallerIdMode):
            raise ValueError(f"caller-ID mode must be pass, fixed or from_did, got {self.mode!r}")
        if self.format not in _FORMATS:
            raise ValueError(f"unknown number format {self.format!r}")
        if self.mode == "fixed":
            if self.fixed_number is None:
                raise ValueError("caller-ID mode 'fixed' needs fixed_number")
            _check_e164(self.fixed_number, "fixed_number")
        if not isinstance(self.restricted, bool):
            raise TypeError(f"restricted must be bool, not {type(self.restricted).__name__}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> CallerIdRule:
        """Build from the API's ``{"mode", "fixed_number", "format", "restricted"}``."""
        return cls(
            mode=data.get("mode", "pass"),
            fixed_number=data.get("fixed_number"),
            format=data.get("format", "e164"),
            restricted=data.get("restricted", False),
        )

    def apply(
        self,
        caller: str,
        *,
        did: str | None = None,
        restricted: bool = False,
        country: Country = RUSSIA,
    ) -> CallerId:
        """The caller ID for an outbound call from ``caller`` (E.164 or an extension).

        ``did`` is the tenant's DID for this caller (E.164), ``restricted`` the caller's own
        request to hide the number (CLIR). Raises ValueError when the rule cannot produce
        a number (``from_did`` without a DID, an extension calling out with no DID).
        """
        if self.mode == "fixed":
            assert self.fixed_number is not None  # checked in __post_init__
            number = self.fixed_number
        elif self.mode == "from_did":
            if did is None:
                raise ValueError("caller-ID rule 'from_did' needs the tenant's DID")
            number = _check_e164(did, "DID")
        elif is_e164(caller):
            number = caller
        elif did is not None:
            number = _check_e164(did, "DID")
        else:
            raise ValueError(
                f"caller {caller!r} is not an E.164 number and there is no DID to present"
            )
        return CallerId(
            format_number(number, self.format, country=country), self.restricted or restricted
        )
