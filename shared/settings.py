"""Configuration: one frozen Settings built from NOTIHUB_* environment variables."""
from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import logging
import os
from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from . import redisconn
from .ratelimit import Rate

logger = logging.getLogger(__name__)

# Local defaults: good for `make run`, never for production (the processes refuse them unless
# NOTIHUB_ENV=development).
LOCAL_JWT_SECRET = "notihub-local-jwt-secret-change-me-0123456789"
LOCAL_SERVICE_KEY = "notihub-local-service-key"
EVENT_LOOPS = ("uvloop", "asyncio")


class SettingsError(ValueError):
    """A NOTIHUB_* variable has a value that cannot be used."""


def _key_algorithm(pem: str) -> str:
    """RS256 or ES256, from the kind of a PEM public key."""
    try:
        key = load_pem_public_key(pem.encode())
    except ValueError:
        raise SettingsError("NOTIHUB_JWT_PUBLIC_KEY must be a PEM public key, or the path of one") from None
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ES256"
    raise SettingsError("NOTIHUB_JWT_PUBLIC_KEY must be an RSA or EC public key")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}")
    return value


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "on", "yes"):
        return True
    if raw in ("0", "false", "off", "no"):
        return False
    raise SettingsError(f"{name} must be 1 or 0, not {raw!r}")


def _list(raw: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (raw or "").split(",") if part.strip())


def _rate(env: Mapping[str, str], name: str, default: Rate) -> Rate:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return Rate.parse(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None


def _networks(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(part, strict=False) for part in (_list(env.get(name)) or default))
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None


def _origins(env: Mapping[str, str], *, development: bool) -> tuple[str, ...]:
    # Unset: the hub's own origin only; in development any page may try the hub (without
    # credentials, which are never allowed).
    if env.get("NOTIHUB_CORS_ORIGINS") is None and development:
        return ("*",)
    origins = _list(env.get("NOTIHUB_CORS_ORIGINS"))
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise SettingsError(f"NOTIHUB_CORS_ORIGINS: {origin!r} is not an origin such as https://app.example.com")
    return origins


# Addresses whose X-Forwarded-For / X-Real-IP is believed: loopback and private networks, where
# load balancers live.
PRIVATE_NETWORKS = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting of every notihub process."""

    mongo_url: str = "mongodb://127.0.0.1:27117/?replicaSet=rs0"
    mongo_db: str = "notihub"
    redis_url: str = "redis://127.0.0.1:6390/0"
    kafka_bootstrap: str | None = None
    channel_prefix: str = "notihub"

    jwt_secret: str | None = LOCAL_JWT_SECRET
    jwt_public_key: str | None = None
    jwt_algorithm: str = "HS256"
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    service_keys: tuple[str, ...] = (LOCAL_SERVICE_KEY,)

    default_lang: str = "en"
    retention_days: int = 7
    retention_seconds: int | None = None
    max_per_user: int = 1000
    max_body_bytes: int = 1024 * 1024
    replay_limit: int = 500
    init_limit: int = 20
    max_connections_per_user: int = 50
    drain_seconds: int = 10
    idempotency_hours: int = 24
    ingest_concurrency: int = 32
    log_level: str = "INFO"
    # Deadlines and failure handling of the delivery path (see README, "Guarantees").
    mongo_timeout_ms: int = 10_000
    redis_timeout: float = 5.0
    position_check_seconds: int = 10
    # Each commit's events go only to the socket workers holding their users (see shared/bus.py);
    # 0: to every worker, on the shared channel.
    bus_targeted: bool = True
    retention_sweep_seconds: int = 60
    max_socket_queue: int = 1000
    namespace_timeout_seconds: int = 10
    # Safe defaults and abuse resistance (see README, "Security").
    env: str = "production"
    cors_origins: tuple[str, ...] = ()
    metrics_key: str | None = None
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
        ipaddress.ip_network(n) for n in PRIVATE_NETWORKS)
    producer_rate: Rate = Rate(3000, 1)
    user_rate: Rate = Rate(1200, 60)
    socket_event_rate: Rate = Rate(100, 10)
    handshake_rate_per_address: Rate = Rate(1200, 60)
    handshake_rate_per_user: Rate = Rate(120, 60)
    user_max_per_minute: int = 1800
    # The servers' event loop: uvloop (libuv, see README "Libraries") or the standard library's.
    event_loop: str = "uvloop"

    @property
    def retention(self) -> "dt.timedelta":
        """How long notifications are kept (NOTIHUB_RETENTION_SECONDS overrides the days)."""
        return dt.timedelta(seconds=self.retention_seconds or self.retention_days * 86400)

    @property
    def uses_local_secrets(self) -> bool:
        """True when the built-in development secrets are in use."""
        return self.jwt_secret == LOCAL_JWT_SECRET or LOCAL_SERVICE_KEY in self.service_keys

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Read NOTIHUB_* variables; unset ones keep their local defaults."""
        env = os.environ if env is None else env
        defaults = cls()
        public_key = env.get("NOTIHUB_JWT_PUBLIC_KEY") or None
        if public_key and os.path.isfile(public_key):
            with open(public_key, encoding="utf-8") as fh:
                public_key = fh.read()
        secret = env.get("NOTIHUB_JWT_SECRET") or (None if public_key else defaults.jwt_secret)
        configured = env.get("NOTIHUB_JWT_ALGORITHM") or None
        if configured not in (None, "HS256", "RS256", "ES256"):
            raise SettingsError("NOTIHUB_JWT_ALGORITHM must be HS256, RS256 or ES256")
        if public_key and configured != "HS256":
            # The key's own algorithm; HS256 tokens stay accepted when a secret is set as well.
            algorithm = _key_algorithm(public_key)
            if configured not in (None, algorithm):
                raise SettingsError(f"NOTIHUB_JWT_PUBLIC_KEY is a key for {algorithm}, not {configured}")
        else:
            algorithm = configured or "HS256"
        if algorithm == "HS256" and not secret:
            raise SettingsError("HS256 needs NOTIHUB_JWT_SECRET")
        if algorithm != "HS256" and not public_key:
            raise SettingsError(f"{algorithm} needs NOTIHUB_JWT_PUBLIC_KEY")
        redis_url = env.get("NOTIHUB_REDIS_URL") or defaults.redis_url
        if redisconn.is_cluster_url(redis_url):
            try:
                redisconn.cluster_seeds(redis_url)
            except ValueError as exc:
                raise SettingsError(f"NOTIHUB_REDIS_URL: {exc}") from None
        environment = (env.get("NOTIHUB_ENV") or defaults.env).strip().lower()
        if environment not in ("development", "production"):
            raise SettingsError("NOTIHUB_ENV must be development or production")
        event_loop = (env.get("NOTIHUB_EVENT_LOOP") or defaults.event_loop).strip().lower()
        if event_loop not in EVENT_LOOPS:
            raise SettingsError("NOTIHUB_EVENT_LOOP must be uvloop or asyncio")
        settings = cls(
            event_loop=event_loop,
            mongo_url=env.get("NOTIHUB_MONGO_URL") or defaults.mongo_url,
            mongo_db=env.get("NOTIHUB_MONGO_DB") or defaults.mongo_db,
            redis_url=redis_url,
            kafka_bootstrap=env.get("NOTIHUB_KAFKA_BOOTSTRAP") or None,
            channel_prefix=env.get("NOTIHUB_CHANNEL_PREFIX") or defaults.channel_prefix,
            jwt_secret=secret,
            jwt_public_key=public_key,
            jwt_algorithm=algorithm,
            jwt_audience=env.get("NOTIHUB_JWT_AUDIENCE") or None,
            jwt_issuer=env.get("NOTIHUB_JWT_ISSUER") or None,
            service_keys=_list(env.get("NOTIHUB_SERVICE_KEYS")) or defaults.service_keys,
            default_lang=env.get("NOTIHUB_DEFAULT_LANG") or defaults.default_lang,
            retention_days=_int(env, "NOTIHUB_RETENTION_DAYS", defaults.retention_days, 1),
            retention_seconds=_int(env, "NOTIHUB_RETENTION_SECONDS", 0, 0) or None,
            max_per_user=_int(env, "NOTIHUB_MAX_PER_USER", defaults.max_per_user, 1),
            max_connections_per_user=_int(
                env, "NOTIHUB_MAX_CONNECTIONS_PER_USER", defaults.max_connections_per_user, 1
            ),
            ingest_concurrency=_int(env, "NOTIHUB_INGEST_CONCURRENCY", defaults.ingest_concurrency, 1),
            drain_seconds=_int(env, "NOTIHUB_DRAIN_SECONDS", defaults.drain_seconds, 0),
            log_level=(env.get("NOTIHUB_LOG_LEVEL") or defaults.log_level).upper(),
            mongo_timeout_ms=_int(env, "NOTIHUB_MONGO_TIMEOUT_MS", defaults.mongo_timeout_ms, 100),
            redis_timeout=_int(env, "NOTIHUB_REDIS_TIMEOUT_MS", int(defaults.redis_timeout * 1000), 100) / 1000,
            position_check_seconds=_int(env, "NOTIHUB_POSITION_CHECK_SECONDS", defaults.position_check_seconds, 1),
            bus_targeted=_switch(env, "NOTIHUB_BUS_TARGETED", defaults.bus_targeted),
            retention_sweep_seconds=_int(env, "NOTIHUB_RETENTION_SWEEP_SECONDS", defaults.retention_sweep_seconds, 1),
            max_socket_queue=_int(env, "NOTIHUB_MAX_SOCKET_QUEUE", defaults.max_socket_queue, 10),
            namespace_timeout_seconds=_int(env, "NOTIHUB_NAMESPACE_TIMEOUT_SECONDS",
                                           defaults.namespace_timeout_seconds, 1),
            env=environment,
            cors_origins=_origins(env, development=environment == "development"),
            metrics_key=env.get("NOTIHUB_METRICS_KEY") or None,
            trusted_proxies=_networks(env, "NOTIHUB_TRUSTED_PROXIES", PRIVATE_NETWORKS),
            producer_rate=_rate(env, "NOTIHUB_PRODUCER_RATE_LIMIT", defaults.producer_rate),
            user_rate=_rate(env, "NOTIHUB_USER_RATE_LIMIT", defaults.user_rate),
            socket_event_rate=_rate(env, "NOTIHUB_SOCKET_RATE_LIMIT", defaults.socket_event_rate),
            handshake_rate_per_address=_rate(env, "NOTIHUB_HANDSHAKE_RATE_LIMIT_PER_ADDRESS",
                                             defaults.handshake_rate_per_address),
            handshake_rate_per_user=_rate(env, "NOTIHUB_HANDSHAKE_RATE_LIMIT_PER_USER",
                                          defaults.handshake_rate_per_user),
            user_max_per_minute=_int(env, "NOTIHUB_USER_MAX_PER_MINUTE", defaults.user_max_per_minute, 0),
        )
        return settings

    @property
    def development(self) -> bool:
        """NOTIHUB_ENV=development: the local stack and the tests."""
        return self.env == "development"

    def check_secrets(self) -> None:
        """Refuse the built-in development secrets outside development; warn within it."""
        if not self.uses_local_secrets:
            return
        if not self.development:
            raise SettingsError(
                "the built-in development JWT secret or service key is in use: set NOTIHUB_JWT_SECRET "
                "(or NOTIHUB_JWT_PUBLIC_KEY) and NOTIHUB_SERVICE_KEYS, or NOTIHUB_ENV=development on a "
                "development machine")
        logger.warning("using the built-in development JWT secret or service key (NOTIHUB_ENV=development)")
