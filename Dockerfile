# Capacity Forecaster: one image, three entry points.
#   web (App Runner / ECS):  the CMD below, gunicorn on $PORT (default 8080), GET /healthz
#   batch as a Lambda:       python -m awslambdaric forecasting.aws.handlers.trigger  (or plan,
#                            shard, publish: the Step Functions task steps)
#   batch as a task:         python -m forecasting run   (Fargate / AWS Batch; exit 0/2/3/4)
#
# Sign-in: the image sets no CAPFC_AUTH_MODE on purpose. The web command refuses to start until
# the deployment chooses alb (behind an ALB with authenticate-oidc: CAPFC_AUTH_ALB_ARN,
# CAPFC_AUTH_ISSUER) or oidc (in-app sign-in: CAPFC_AUTH_ISSUER, CAPFC_AUTH_CLIENT_ID,
# CAPFC_AUTH_CLIENT_SECRET, CAPFC_SESSION_SECRET); dev is for a laptop only (see README).
#
# The base image is a build argument whose default is Docker Hub's python:3.11-slim-bookworm
# pinned by digest, so a rebuild cannot silently change the OS layer (a digest the registry does
# not have fails the build; it never falls back to the tag). The digest was taken from a public
# record of the registry's answer (2026-08-24), not checked from this build machine, which
# reaches no registry: re-check it with `docker buildx imagetools inspect
# python:3.11-slim-bookworm` and update it deliberately (README, "Security and data integrity").
# The tests pass a local debootstrap base (see scripts/ensure-docker.sh). Any base works that
# has `python` (3.11+) with pip on PATH and the `groupadd`/`useradd` tools.
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91
FROM ${BASE_IMAGE}

# pip's index settings, for builds behind a private index or mirror. Build arguments, not ENV:
# they reach the pip step only and are not in the image's environment. Never put credentials
# in them (they show in `docker history`); use a BuildKit secret for an authenticated index.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG PIP_CERT
ARG PIP_DEFAULT_TIMEOUT

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8080 \
    CAPFC_DATA=/data \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    PYTHONPATH=/app

WORKDIR /app

# Dependencies first, in their own layer: rebuilt only when the lock changes. requirements.lock
# pins every package (transitive ones too) with its sha256 hashes, made by `make lock` from
# requirements.txt: pip refuses any file whose hash differs, and resolves nothing (--no-deps).
# Compiled to bytecode here, since the unprivileged user cannot write __pycache__ next to
# root-owned code and would otherwise recompile every module at each start (see the README).
COPY requirements.lock ./
RUN python -m pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock \
    && python -m compileall -q -j 0 "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

# An unprivileged user; the code stays root-owned (read-only to the app), data is its own. A
# numeric id in USER lets a host check "not root" without reading /etc/passwd (runAsNonRoot).
RUN groupadd --system --gid 10001 capfc \
    && useradd --system --uid 10001 --gid capfc --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin capfc \
    && mkdir -p /data \
    && chown capfc:capfc /data

COPY gunicorn.conf.py ./
COPY forecasting/ forecasting/
COPY components/ components/
COPY callbacks/ callbacks/
COPY app/ app/
COPY assets/ assets/
# Bytecode for the code, and numba's packing kernels compiled once here (3-9 s per start
# otherwise) into forecasting/_jit_seed, read-only next to the code they came from. numba only
# uses a cache directory it can write, and Lambda's /tmp starts empty, so importing
# forecasting.consolidation copies the seed into $NUMBA_CACHE_DIR (/tmp) first
# (forecasting/jit_cache.py). NUMBA_CPU_NAME=generic: numba keys its cache on the CPU, and the
# machine building the image is not the one running it (generic x86-64 code, measured as fast
# for the packing loop).
ENV NUMBA_CPU_NAME=generic
RUN python -m compileall -q -j 0 /app \
    && NUMBA_CACHE_DIR=/app/forecasting/_jit_seed \
       python -c "from forecasting.consolidation import warm_up; warm_up()" \
    && test -n "$(find /app/forecasting/_jit_seed -name '*.nbi')"

USER 10001:10001
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=4)"]

CMD ["gunicorn", "--config", "gunicorn.conf.py", "app.wsgi:server"]
