"""User tokens: verifying the JWTs that clients present, and minting local ones."""
from __future__ import annotations

import dataclasses
import re
import time

import jwt

from .errors import TokenExpired, Unauthorized
from .settings import Settings
from .validation import MAX_USER_ID, NAME_PATTERN

_USER_ID = re.compile(NAME_PATTERN)

_MAX_TOKEN_LENGTH = 8192


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    """The authenticated caller of a user endpoint or socket."""

    id: str
    name: str | None = None
    roles: tuple[str, ...] = ()
    # When the token stops being valid (its exp, seconds since the epoch).
    expires_at: float | None = None


# The end of year 9999: any later exp is not a date.
MAX_EXP = 253402300800


class TokenVerifier:
    """Checks user JWTs with the algorithms the configuration pins, each with its own key:
    HS256 with NOTIHUB_JWT_SECRET, and RS256 or ES256 with NOTIHUB_JWT_PUBLIC_KEY."""

    def __init__(self, *, settings: Settings) -> None:
        self._keys: dict[str, str] = {}
        if settings.jwt_secret:
            self._keys["HS256"] = settings.jwt_secret
        if settings.jwt_public_key and settings.jwt_algorithm != "HS256":
            self._keys[settings.jwt_algorithm] = settings.jwt_public_key
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer

    def verify(self, token: object) -> User:
        """Return the user a token names, or raise Unauthorized / TokenExpired."""
        if not isinstance(token, str) or not token:
            raise Unauthorized("a user token is required")
        if len(token) > _MAX_TOKEN_LENGTH:
            raise Unauthorized("the token is too long")
        if not token.isascii():
            raise Unauthorized("invalid token: a JWT is ASCII")
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            # Pinned: "none" and every other algorithm are refused, and each algorithm is checked
            # with its own key only (never a public key as an HMAC secret).
            key = self._keys.get(algorithm) if isinstance(algorithm, str) else None
            if key is None:
                raise Unauthorized(f"invalid token: the algorithm must be one of {', '.join(self._keys)}")
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["sub", "exp"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired("the token has expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        exp = claims["exp"]
        # RFC 7519: a JSON number of seconds (PyJWT also takes "1796056754" and 10**400).
        if isinstance(exp, bool) or not isinstance(exp, int | float) or not 0 < exp < MAX_EXP:
            raise Unauthorized("the token's exp must be a number of seconds since 1970")
        sub = claims.get("sub")
        if not isinstance(sub, str) or len(sub) > MAX_USER_ID or not _USER_ID.fullmatch(sub):
            # A user nobody could address (recipients, topics) is refused at once, not later.
            raise Unauthorized(f"the token's sub must be a user id: letters, digits and _.:@+|- "
                               f"(starting with a letter or digit), at most {MAX_USER_ID}")
        name = claims.get("name")
        roles = claims.get("roles") or ()
        if not isinstance(roles, list | tuple) or not all(isinstance(r, str) for r in roles):
            raise Unauthorized("the token's roles must be a list of strings")
        return User(id=sub, name=name if isinstance(name, str) else None, roles=tuple(roles),
                    expires_at=float(exp))


def mint(
    settings: Settings,
    *,
    sub: str,
    name: str | None = None,
    roles: tuple[str, ...] = (),
    ttl: int = 3600,
    now: float | None = None,
) -> str:
    """Mint an HS256 user token with the configured secret (development and tests)."""
    if not settings.jwt_secret:
        raise ValueError("minting needs NOTIHUB_JWT_SECRET (HS256)")
    issued = int(now if now is not None else time.time())
    claims: dict[str, object] = {"sub": sub, "iat": issued, "exp": issued + ttl}
    if name:
        claims["name"] = name
    if roles:
        claims["roles"] = list(roles)
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
