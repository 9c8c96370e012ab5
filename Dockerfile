# syntax=docker/dockerfile:1
# Build stage: the dependencies exactly as uv.lock pins them (hashes checked), in a layer
# that changes only with the lock; the code comes after, so a code change reinstalls nothing.
FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PROJECT_ENVIRONMENT=/venv UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install uv==0.13.8
WORKDIR /src
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-install-project --no-cache

FROM python:3.12-slim
# DB_POOL_SIZE=5: each worker opens at most 4 x 5 PostgreSQL connections, so the default
# 4 workers stay under PostgreSQL's default max_connections of 100 (README, Configuration).
# The code runs from /srv (PYTHONPATH), not installed into /venv.
# UVICORN_*: per worker; README, "Deployment" (slow clients, keep-alive, streams).
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/srv \
    ENVIRONMENT=production PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus DB_POOL_SIZE=5 \
    PORT=8000 WEB_CONCURRENCY=4 UVICORN_LIMIT_CONCURRENCY=1000 UVICORN_BACKLOG=2048 \
    UVICORN_TIMEOUT_KEEP_ALIVE=5
# /data: writable by the service, for an SQLite file on a mounted volume
# (DATABASE_URL=sqlite+aiosqlite:////data/rankframe.db); production names its database.
RUN useradd --system --uid 10001 --home /srv rankframe \
    && install -d -o rankframe -g rankframe -m 700 /data
WORKDIR /srv
COPY --from=build /venv /venv
COPY alembic.ini ./
COPY migrations ./migrations
COPY app ./app
USER rankframe
EXPOSE 8000
# The start period covers `alembic upgrade head`, which runs before uvicorn listens.
HEALTHCHECK --interval=15s --timeout=3s --start-period=300s --start-interval=2s --retries=3 \
  CMD python -c "import os,sys,urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2).status != 200)"
# Metrics of all workers add up in PROMETHEUS_MULTIPROC_DIR, emptied at each start. Then
# migrations and uvicorn in one process (`python -m app serve`; it refuses bad settings
# with one line and exit code 2).
CMD ["sh", "-c", "rm -rf \"$PROMETHEUS_MULTIPROC_DIR\" && mkdir -p \"$PROMETHEUS_MULTIPROC_DIR\" && exec python -m app serve --host 0.0.0.0 --port \"$PORT\" --workers \"$WEB_CONCURRENCY\" --proxy-headers --timeout-graceful-shutdown 10 --timeout-keep-alive \"$UVICORN_TIMEOUT_KEEP_ALIVE\" --limit-concurrency \"$UVICORN_LIMIT_CONCURRENCY\" --backlog \"$UVICORN_BACKLOG\""]
