"""Credential store: TOML users file, HA1 per algorithm, realm policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbxcore.sip.auth import DigestAlgorithm
from pbxcore.sip.credentials import CredentialStore, FileCredentialStore, RealmPolicy
from tests.helpers import digest_ha1


def test_from_toml_hashes_passwords(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    path.write_text(
        '[[users]]\ndomain = "Tenant.Example"\nusername = "101"\npassword = "s3cret"\n\n'
        f'[[users]]\ndomain = "other.example"\nusername = "bob"\n'
        f'ha1_md5 = "{digest_ha1("MD5", "bob", "other.example", "pw")}"\n\n'
        '[[domains]]\nname = "sha.example"\nmd5 = false\n'
        '[[domains]]\nname = "old.example"\nalgorithms = ["MD5", "SHA-256"]\n'
    )
    store = FileCredentialStore.from_toml(path)
    assert isinstance(store, CredentialStore)
    assert store.realms == ["old.example", "other.example", "sha.example", "tenant.example"]
    assert store.realm_algorithms("old.example") == (DigestAlgorithm.MD5, DigestAlgorithm.SHA256)
    assert store.lookup_ha1("tenant.example", "101", DigestAlgorithm.MD5) == digest_ha1(
        "MD5", "101", "tenant.example", "s3cret"
    )
    assert store.lookup_ha1("TENANT.example", "101", DigestAlgorithm.SHA256) == digest_ha1(
        "SHA-256", "101", "tenant.example", "s3cret"
    )
    assert store.lookup_ha1("other.example", "bob", DigestAlgorithm.SHA256) is None
    assert store.lookup_ha1("tenant.example", "102", DigestAlgorithm.MD5) is None
    assert store.realm_algorithms("tenant.example") == (DigestAlgorithm.SHA256, DigestAlgorithm.MD5)
    assert store.realm_algorithms("sha.example") == (DigestAlgorithm.SHA256,)
    assert store.realm_algorithms("nowhere.example") == ()
    # the password is nowhere in the store
    assert "s3cret" not in repr(store._users)
    assert len(store) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[users]]\ndomain = "a.test"\nusername = "x"\n', "neither password nor HA1"),
        ('[[users]]\ndomain = "a.test"\npassword = "x"\n', "must be strings"),
        ('[[users]]\ndomain = "a b"\nusername = "x"\npassword = "p"\n', "invalid domain"),
        ('[[users]]\ndomain = "a.test"\nusername = "x"\npassword = 5\n', "'password' must be"),
        ('[[users]]\ndomain = "a.test"\nusername = "x"\npasswd = "p"\n', "unknown keys"),
        ('[[users]]\ndomain = "a.test"\nusername = "x"\nha1_md5 = "zz"\n', "not hex"),
        (
            '[[users]]\ndomain = "a.test"\nusername = "x"\npassword = "p"\n'
            '[[users]]\ndomain = "A.test"\nusername = "x"\npassword = "q"\n',
            "duplicate user",
        ),
        ("users = 3\n", "array of tables"),
        ('[[domains]]\nname = "a.test"\nmd5 = "no"\n', "true or false"),
        ("[[domains]]\nmd5 = false\n", "string 'name'"),
        ("[server]\nport = 1\n", "unknown top-level"),
        ("[[users]\n", "users.toml"),
    ],
)
def test_from_toml_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "users.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        FileCredentialStore.from_toml(path)
    assert str(path) in str(info.value)


def test_add_user_validation_and_repr() -> None:
    store = FileCredentialStore()
    user = store.add_user("a.test", "alice", "topsecret")
    assert "topsecret" not in repr(user) and user.ha1[DigestAlgorithm.MD5] not in repr(user)
    with pytest.raises(ValueError, match="invalid username"):
        store.add_user("a.test", 'al"ice', "x")
    store.set_policy("a.test", RealmPolicy(allow_md5=False))
    assert store.realm_algorithms("a.test") == (DigestAlgorithm.SHA256,)
