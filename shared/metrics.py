"""Prometheus metrics of every notihub process."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "notihub_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
NOTIFICATIONS_STORED = Counter("notihub_notifications_stored_total", "Notifications written to MongoDB")
BUS_MESSAGES = Counter("notihub_bus_messages_total", "Messages received from the event bus", ["kind"])
SOCKETS = Gauge("notihub_sockets_connected", "Sockets connected to this worker")
CONNECTS_REFUSED = Counter("notihub_connects_refused_total", "Socket handshakes refused", ["code"])
DELIVERED = Counter("notihub_notifications_delivered_total", "Notifications emitted to sockets", ["path"])
DELIVERY_SECONDS = Histogram(
    "notihub_delivery_seconds",
    "From a notification's creation to its emit on a socket",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
