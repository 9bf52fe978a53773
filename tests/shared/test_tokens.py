"""Token verification: the pinned algorithms, required claims, expiry, audience and issuer."""
import base64
import hashlib
import hmac
import time

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.errors import TokenExpired, Unauthorized
from shared.settings import Settings, SettingsError
from shared.tokens import TokenVerifier, mint

SECRET = "test-secret-0123456789-0123456789-abcdef"


def hs(claims, key=SECRET, alg="HS256"):
    return jwt.encode(claims, key, algorithm=alg)


@pytest.fixture
def verifier():
    return TokenVerifier(settings=Settings(jwt_secret=SECRET))


def test_valid_token(verifier):
    user = verifier.verify(hs({"sub": "u1", "exp": time.time() + 60, "name": "Kim", "roles": ["instructor"]}))
    assert (user.id, user.name, user.roles) == ("u1", "Kim", ("instructor",))


@pytest.mark.parametrize("sub", ["auth0|5f3a", "student:42", "kim@example.com", "9b1deb4d-3b7d", "u" * 128])
def test_subs_that_are_user_ids(verifier, sub):
    assert verifier.verify(hs({"sub": sub, "exp": time.time() + 60})).id == sub


@pytest.mark.parametrize("make", [
    lambda: None, lambda: "", lambda: "x", lambda: "a.b.c", lambda: 42,
    lambda: hs({"sub": "u1", "exp": time.time() + 60}, key="another-secret-0123456789-0123456789"),
    lambda: hs({"exp": time.time() + 60}),
    lambda: hs({"sub": "u1"}),
    lambda: hs({"sub": "", "exp": time.time() + 60}),
    lambda: hs({"sub": 5, "exp": time.time() + 60}),
    lambda: hs({"sub": "Kim Lee", "exp": time.time() + 60}),
    lambda: hs({"sub": "u1\n", "exp": time.time() + 60}),
    lambda: hs({"sub": "-u1", "exp": time.time() + 60}),
    lambda: hs({"sub": "u" * 129, "exp": time.time() + 60}),
    lambda: hs({"sub": "u1", "exp": time.time() + 60}, alg="HS512"),
    lambda: jwt.encode({"sub": "u1", "exp": time.time() + 60}, None, algorithm="none"),
    lambda: hs({"sub": "u1", "exp": time.time() + 60, "roles": "admin"}),
])
def test_refused(verifier, make):
    # Built when the test runs, so a long session cannot turn them into expired tokens.
    with pytest.raises(Unauthorized) as info:
        verifier.verify(make())
    assert info.value.code == "unauthorized"


def test_expired(verifier):
    with pytest.raises(TokenExpired) as info:
        verifier.verify(hs({"sub": "u1", "exp": time.time() - 5}))
    assert info.value.code == "token_expired"


def test_audience_and_issuer_are_checked_when_set():
    settings = Settings(jwt_secret=SECRET, jwt_audience="hub", jwt_issuer="lms")
    v = TokenVerifier(settings=settings)
    assert v.verify(mint(settings, sub="u1")).id == "u1"
    for claims in ({"aud": "other", "iss": "lms"}, {"aud": "hub", "iss": "evil"}, {}):
        with pytest.raises(Unauthorized):
            v.verify(hs({"sub": "u1", "exp": time.time() + 60, **claims}))


def test_rs256_pinned_refuses_hs256_signed_with_the_public_key():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    settings = Settings.from_env({"NOTIHUB_JWT_PUBLIC_KEY": _pem(private)})
    assert settings.jwt_algorithm == "RS256"
    v = TokenVerifier(settings=settings)
    good = jwt.encode({"sub": "u1", "exp": time.time() + 60}, private, algorithm="RS256")
    assert v.verify(good).id == "u1"
    with pytest.raises(Unauthorized):
        v.verify(jwt.encode({"sub": "u1", "exp": time.time() + 60}, "x" * 32, algorithm="HS256"))


def _hs256_signed_with(key: bytes, claims: dict) -> str:
    # By hand: PyJWT itself refuses a PEM key as an HMAC secret, as an attacker would not.
    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")
    signing_input = b64(orjson.dumps({"alg": "HS256", "typ": "JWT"})) + b"." + b64(orjson.dumps(claims))
    return (signing_input + b"." + b64(hmac.new(key, signing_input, hashlib.sha256).digest())).decode()


def _pem(private) -> str:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_an_ec_key_means_es256():
    private = ec.generate_private_key(ec.SECP256R1())
    settings = Settings.from_env({"NOTIHUB_JWT_PUBLIC_KEY": _pem(private)})
    assert settings.jwt_algorithm == "ES256"
    v = TokenVerifier(settings=settings)
    assert v.verify(jwt.encode({"sub": "u1", "exp": time.time() + 60}, private, algorithm="ES256")).id == "u1"
    with pytest.raises(SettingsError):
        Settings.from_env({"NOTIHUB_JWT_PUBLIC_KEY": _pem(private), "NOTIHUB_JWT_ALGORITHM": "RS256"})
    with pytest.raises(SettingsError):
        Settings.from_env({"NOTIHUB_JWT_PUBLIC_KEY": "not a key"})


def test_a_secret_and_a_public_key_accept_both_each_with_its_own_key():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = _pem(private)
    v = TokenVerifier(settings=Settings.from_env({"NOTIHUB_JWT_SECRET": SECRET, "NOTIHUB_JWT_PUBLIC_KEY": public_pem}))
    claims = {"sub": "u1", "exp": time.time() + 60}
    assert v.verify(jwt.encode(claims, private, algorithm="RS256")).id == "u1"
    assert v.verify(hs(claims)).id == "u1"
    # HS256 is checked with the secret only, never with the public key as its secret.
    with pytest.raises(Unauthorized):
        v.verify(_hs256_signed_with(public_pem.encode(), claims))
    for alg in ("ES256", "HS512", "none"):
        with pytest.raises(Unauthorized):
            v.verify(jwt.encode(claims, None if alg == "none" else "k" * 64 if alg == "HS512" else
                                ec.generate_private_key(ec.SECP256R1()), algorithm=alg))


def test_settings_reject_unusable_values():
    with pytest.raises(SettingsError):
        Settings.from_env({"NOTIHUB_RETENTION_DAYS": "soon"})
    with pytest.raises(SettingsError):
        Settings.from_env({"NOTIHUB_JWT_ALGORITHM": "none"})
    with pytest.raises(SettingsError):
        Settings.from_env({"NOTIHUB_JWT_ALGORITHM": "RS256"})
    assert Settings.from_env({"NOTIHUB_SERVICE_KEYS": "a, b,"}).service_keys == ("a", "b")
