# syntax=docker/dockerfile:1
FROM python:3.12-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /venv
COPY pyproject.toml ./
COPY app ./app
RUN /venv/bin/pip install .

FROM python:3.12-slim
# DB_POOL_SIZE=5: each worker opens at most 4 x 5 PostgreSQL connections, so the default
# 4 workers stay under PostgreSQL's default max_connections of 100 (README, Configuration).
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 ENVIRONMENT=production \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus DB_POOL_SIZE=5
RUN useradd --system --uid 10001 --home /srv rankframe
WORKDIR /srv
COPY --from=build /venv /venv
COPY alembic.ini ./
COPY migrations ./migrations
COPY app ./app
USER rankframe
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
# Metrics of all workers add up in PROMETHEUS_MULTIPROC_DIR, emptied at each start.
CMD ["sh", "-c", "rm -rf \"$PROMETHEUS_MULTIPROC_DIR\" && mkdir -p \"$PROMETHEUS_MULTIPROC_DIR\" && alembic upgrade head && exec uvicorn app.main:app --host 0.0.0.0 --port 8000 --workers ${WEB_CONCURRENCY:-4} --proxy-headers --timeout-graceful-shutdown 10"]
