# Capacity Forecaster web app: gunicorn on $PORT (default 8080) with a health check, for AWS
# App Runner or any container host. The same image runs the batch job:
#   docker run … capacity-forecaster python -m forecasting run
#
# The base image is a build argument so it can come from a private registry or a local build.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8080 \
    CAPFC_DATA=/data \
    NUMBA_CACHE_DIR=/tmp/numba-cache

WORKDIR /app

# Dependencies first, in their own layer: rebuilt only when requirements.txt changes.
COPY requirements.txt ./
RUN python -m pip install --no-compile -r requirements.txt

# An unprivileged user; the code stays root-owned (read-only to the app), data is its own.
RUN groupadd --system capfc \
    && useradd --system --gid capfc --home-dir /app --no-create-home --shell /usr/sbin/nologin capfc \
    && mkdir -p /data \
    && chown capfc:capfc /data

COPY gunicorn.conf.py ./
COPY forecasting/ forecasting/
COPY components/ components/
COPY callbacks/ callbacks/
COPY app/ app/
COPY assets/ assets/

USER capfc
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=4)"]

CMD ["gunicorn", "--config", "gunicorn.conf.py", "app.wsgi:server"]
