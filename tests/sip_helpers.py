"""A tiny registering UA for the SIP tests: builds REGISTERs and answers challenges."""

from __future__ import annotations

import itertools

from pbxcore.sip import Request, Response, new_tag
from tests.helpers import digest_response


def challenge_params(value: str) -> dict[str, str]:
    """The parameters of one WWW-Authenticate Digest value."""
    out: dict[str, str] = {}
    for part in value.removeprefix("Digest ").split(","):
        name, _, raw = part.strip().partition("=")
        out[name.lower()] = raw.strip('"')
    return out


class RegisteringUA:
    """Builds REGISTER requests for one AOR and answers digest challenges."""

    def __init__(
        self,
        user: str,
        domain: str,
        password: str,
        *,
        contact: str = "sip:ua@127.0.0.1:5999",
        call_id: str | None = None,
        auth_user: str | None = None,
    ) -> None:
        self.user = user
        self.domain = domain
        self.password = password
        self.contact = contact
        self.call_id = call_id or new_tag() + "@test"
        self.auth_user = auth_user or user
        self.tag = new_tag()
        self.cseq = itertools.count(1)
        self.nc = itertools.count(1)

    def register(
        self,
        *,
        expires: int | None = 600,
        contacts: list[str] | None = None,
        authorization: str | None = None,
        cseq: int | None = None,
        via: str = "SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{n};rport",
    ) -> Request:
        n = next(self.cseq) if cseq is None else cseq
        headers = [
            ("Via", via.format(n=f"{self.tag}{n}")),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{self.user}@{self.domain}>;tag={self.tag}"),
            ("To", f"<sip:{self.user}@{self.domain}>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{n} REGISTER"),
        ]
        for contact in [f"<{self.contact}>"] if contacts is None else contacts:
            headers.append(("Contact", contact))
        if expires is not None:
            headers.append(("Expires", str(expires)))
        if authorization is not None:
            headers.append(("Authorization", authorization))
        return Request("REGISTER", f"sip:{self.domain}", headers)

    def answer(
        self,
        challenge: Response | str,
        *,
        algorithm: str | None = None,
        password: str | None = None,
        nc: int | None = None,
        uri: str | None = None,
    ) -> str:
        """An Authorization value answering ``challenge`` (a 401, or one header value)."""
        if isinstance(challenge, Response):
            values = challenge.headers.get_all("www-authenticate")
            chosen = next(v for v in values if algorithm is None or f"algorithm={algorithm}" in v)
        else:
            chosen = challenge
        params = challenge_params(chosen)
        alg = params.get("algorithm", "MD5")
        realm, nonce = params["realm"], params["nonce"]
        nc_text = f"{next(self.nc) if nc is None else nc:08x}"
        digest_uri = uri or f"sip:{self.domain}"
        response = digest_response(
            alg, self.auth_user, realm, password or self.password, "REGISTER", digest_uri,
            nonce, nc=nc_text, cnonce="0a4f113b",
        )  # fmt: skip
        return (
            f'Digest username="{self.auth_user}", realm="{realm}", nonce="{nonce}", '
            f'uri="{digest_uri}", response="{response}", algorithm={alg}, '
            f'qop=auth, nc={nc_text}, cnonce="0a4f113b"'
        )
