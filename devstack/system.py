"""Install the Debian packages the local stack needs, when they are missing."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from typing import Iterable

log = logging.getLogger(__name__)

# Debian package -> the executable that shows it is installed.
PACKAGES = {
    "redis-server": "redis-server",
    "nginx-light": "nginx",
    # Kafka runs from Maven Central jars (devstack.kafka): a Java 17 runtime and Maven fetch them.
    "openjdk-17-jre-headless": "java",
    "maven": "mvn",
    # The dashboard's browser tests drive Debian's Chromium (never a downloaded browser build),
    # with CJK fonts so Korean renders in its screenshots.
    "chromium": "chromium",
    "fonts-noto-cjk": "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
}

_SBIN = ("/usr/sbin", "/usr/bin", "/sbin")


def _have(executable: str) -> bool:
    if os.path.isabs(executable):
        return os.path.exists(executable)
    if shutil.which(executable):
        return True
    # nginx lives in /usr/sbin, which is not on every user's PATH.
    return any(os.access(os.path.join(d, executable), os.X_OK) for d in _SBIN)


def missing_packages(packages: Iterable[str] | None = None) -> list[str]:
    """Return the Debian packages (default: all of PACKAGES) whose executables are not installed."""
    return [pkg for pkg in (PACKAGES if packages is None else packages) if not _have(PACKAGES[pkg])]


def install_system(packages: Iterable[str] | None = None) -> list[str]:
    """Install the missing Debian packages (default: all of PACKAGES, idempotent); return what was installed."""
    wanted = list(PACKAGES if packages is None else packages)
    missing = missing_packages(wanted)
    if not missing:
        log.info("system packages present: %s", ", ".join(wanted))
        return []
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log.info("installing %s", ", ".join(missing))
    subprocess.run([*prefix, "apt-get", "update"], check=True, env=env)
    # --no-install-recommends keeps it small; the stack runs its own instances, never the
    # system services these packages bring.
    subprocess.run([*prefix, "apt-get", "install", "-y", "--no-install-recommends", *missing], check=True, env=env)
    return missing
