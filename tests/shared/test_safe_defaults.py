"""Outside development the processes refuse the built-in secrets; the settings that guard the
public surface read as documented."""
import ipaddress
import os
import subprocess
import sys

import pytest

from shared.settings import LOCAL_JWT_SECRET, LOCAL_SERVICE_KEY, Settings, SettingsError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIHUB_")}
    return {**env, **extra}


@pytest.mark.parametrize("module", ["api_server", "socket_server"])
@pytest.mark.parametrize("secrets", [
    {},  # both built in
    {"NOTIHUB_JWT_SECRET": "a-real-secret-0123456789-0123456789"},  # the service key still built in
    {"NOTIHUB_SERVICE_KEYS": "a-real-key"},  # the JWT secret still built in
])
def test_a_process_refuses_to_start_with_the_built_in_secrets(module, secrets):
    done = subprocess.run([sys.executable, "-m", module, "--port", "1"], cwd=ROOT, env=_clean_env(**secrets),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "built-in development" in done.stderr and "NOTIHUB_ENV=development" in done.stderr


def test_development_accepts_the_built_in_secrets_with_a_warning(caplog):
    settings = Settings.from_env({"NOTIHUB_ENV": "development"})
    assert settings.jwt_secret == LOCAL_JWT_SECRET and settings.service_keys == (LOCAL_SERVICE_KEY,)
    settings.check_secrets()
    assert "development" in caplog.text


def test_real_secrets_start_anywhere():
    Settings.from_env({"NOTIHUB_JWT_SECRET": "s" * 40, "NOTIHUB_SERVICE_KEYS": "k"}).check_secrets()


def test_an_unknown_environment_is_refused():
    with pytest.raises(SettingsError, match="NOTIHUB_ENV"):
        Settings.from_env({"NOTIHUB_ENV": "staging"})


def test_origins_proxies_and_the_metrics_key_are_read_as_documented():
    settings = Settings.from_env({"NOTIHUB_CORS_ORIGINS": "https://app.example, http://localhost:3000",
                                  "NOTIHUB_TRUSTED_PROXIES": "10.1.0.0/16,fd00::1",
                                  "NOTIHUB_METRICS_KEY": "k"})
    assert settings.cors_origins == ("https://app.example", "http://localhost:3000")
    assert settings.trusted_proxies == (ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("fd00::1"))
    assert settings.metrics_key == "k"
    defaults = Settings.from_env({})
    assert defaults.cors_origins == () and defaults.metrics_key is None and defaults.env == "production"
    # Development lets any page try the hub (never with credentials); a setting still wins.
    assert Settings.from_env({"NOTIHUB_ENV": "development"}).cors_origins == ("*",)
    assert Settings.from_env({"NOTIHUB_ENV": "development", "NOTIHUB_CORS_ORIGINS": ""}).cors_origins == ()
    assert ipaddress.ip_address("127.0.0.1") in defaults.trusted_proxies[0]
    for bad in ({"NOTIHUB_CORS_ORIGINS": "app.example"}, {"NOTIHUB_TRUSTED_PROXIES": "not-an-address"}):
        with pytest.raises(SettingsError):
            Settings.from_env(bad)
