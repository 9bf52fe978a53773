"""The tests of this folder run on the cluster stack (tests/conftest.py: ``cluster_stack``): the
usual fixture names stand for it here, so that tests written for a single Redis run unchanged."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def stack(cluster_stack):
    return cluster_stack


@pytest.fixture(scope="session")
def settings(cluster_settings):
    return cluster_settings


@pytest.fixture(scope="session")
def runtime(cluster_runtime):
    return cluster_runtime


@pytest.fixture(scope="session")
def hub(cluster_hub):
    return cluster_hub
