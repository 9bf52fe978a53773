# notihub application image: one image for the HTTP API, the socket workers and the ingest workers.
#   API:           python -m api_server --host 0.0.0.0 --port 8100
#   socket worker: python -m socket_server --host 0.0.0.0 --port 8200 --worker-id w0
#   ingest worker: python -m ingest --host 0.0.0.0 --port 8300 --worker-id i0
# Configuration comes only from NOTIHUB_* environment variables (see compose.yaml).

# Browser assets the API serves from its own origin (Swagger UI for /docs, the Socket.IO client
# for /dashboard/), installed exactly as api_server/assets/package-lock.json pins them.
FROM node:20-alpine AS web

WORKDIR /web

COPY api_server/assets/package.json api_server/assets/package-lock.json ./
# No install scripts: the packages are static files (the only script is a usage ping).
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# An unprivileged user with a fixed id; the code is owned by root and read-only to it.
RUN groupadd --system --gid 10001 notihub \
 && useradd --system --uid 10001 --gid notihub --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin notihub

# Dependencies first, so that code changes reuse this layer.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY shared ./shared
COPY api_server ./api_server
COPY socket_server ./socket_server
COPY ingest ./ingest
# .dockerignore keeps any local node_modules out of the context: these come from the web stage.
COPY --from=web /web/node_modules ./api_server/assets/node_modules

USER notihub

EXPOSE 8100 8200 8300

# No HEALTHCHECK here: the port differs between the API and the workers, so compose.yaml
# gives each service its own (GET /healthz).
CMD ["python", "-m", "api_server", "--host", "0.0.0.0", "--port", "8100"]
