"""An ingest worker that dies right after storing one event and before committing its offset:
``python -m tests.ingest.crashing_worker --worker-id i8`` with CRASH_AFTER_EVENT=<event_id>.

A crash no real service can be made to show on cue, so it lives here, with the tests, and is
put in place through the worker's one extension point (``wrap_handler``), not in its code."""
from __future__ import annotations

import logging
import os

from ingest.__main__ import main

CRASH_AFTER_EVENT = "CRASH_AFTER_EVENT"

logger = logging.getLogger(__name__)


class CrashAfter:
    """Stands in for the event handler: the real one, then the process exits without cleanup."""

    def __init__(self, handler, event_id: str) -> None:
        self._handler = handler
        self._event_id = event_id

    def batchable(self, event) -> bool:
        return self._handler.batchable(event)

    async def handle(self, event):
        result = await self._handler.handle(event)
        self._crash_after([event])
        return result

    async def handle_many(self, events):
        result = await self._handler.handle_many(events)
        self._crash_after(events)
        return result

    def _crash_after(self, events) -> None:
        if any(event.event_id == self._event_id for event in events):
            logger.warning("crashing on purpose after storing %s, before committing", self._event_id)
            os._exit(70)


if __name__ == "__main__":
    main(wrap_handler=lambda handler: CrashAfter(handler, os.environ[CRASH_AFTER_EVENT]))
