"""Prometheus metrics of an ingest worker."""
from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS = Counter("notihub_ingest_events_total", "Domain events consumed", ["type", "outcome"])
LAG = Gauge("notihub_ingest_consumer_lag", "Records not yet handled, per assigned partition", ["partition"])
