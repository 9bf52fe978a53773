"""Fixtures of the shared/ tests."""
import uuid

import pytest

from shared.storage.mongo import database


@pytest.fixture
async def scratch_db(runtime, settings):
    """A database of its own on the session's replica set, dropped at the end."""
    name = f"notihub_scratch_{uuid.uuid4().hex[:8]}"
    db = runtime.mongo.get_database(name, write_concern=database(runtime.mongo, settings).write_concern)
    yield db
    await runtime.mongo.drop_database(name)
