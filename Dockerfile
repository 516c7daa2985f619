# syntax=docker/dockerfile:1.7
#
# StoryForge origin: one image for `storyforge serve` (the default), `storyforge worker`
# and `storyforge migrate`; the command selects, e.g.
#
#   docker build -t storyforge-origin .
#   docker run --env-file prod.env storyforge-origin migrate
#   docker run --env-file prod.env -p 8080:8080 storyforge-origin
#   docker run --env-file prod.env storyforge-origin worker --concurrency 2
#
# Configuration is by environment (README "Configuration"); docs/DEPLOY.md shows how
# infra/ runs it on ECS. Base images are Debian 12 (bookworm), the Debian the test
# suite runs on, so the container's ffmpeg is the one the tests exercised.

# ---------------------------------------------------------------- hls.js (npm)
FROM node:22-bookworm-slim AS npm
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

# ---------------------------------------------------------------- wheels
# Wheels of exactly the runtime lock (requirements/runtime.txt, made by scripts/lock:
# every dependency pinned, every file hash-checked) and the project's wheel, built by the
# locked setuptools (requirements/build.txt) with nothing else fetched; so the runtime
# stage installs offline and needs no compiler. The lock goes first: its layer survives
# changes to the code.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY requirements/runtime.txt requirements/build.txt requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/build.txt \
    && pip wheel --no-cache-dir --require-hashes --wheel-dir /wheels/deps \
       -r requirements/runtime.txt
# The project's wheel: migrations, SQL, player files and hls.min.js as package data (the
# build copies hls.js from node_modules/, so it must be present here).
COPY pyproject.toml setup.py README.md ./
COPY core/ core/
COPY migrations/ migrations/
COPY storyforge/ storyforge/
COPY origin/ origin/
COPY workers/ workers/
COPY --from=npm /src/node_modules/ node_modules/
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

# ---------------------------------------------------------------- runtime
FROM python:3.11-slim-bookworm AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Debian's ffmpeg/ffprobe. Not pinned to a version: bookworm's security updates replace
# the package, and a pinned version would stop building when they do.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

# The build stage's wheels only (--no-index: the locked dependencies and the project,
# --no-deps: nothing resolved again); `pip check` proves the set complete. The bind
# mount keeps the wheels out of the image's layers.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --no-deps /wheels/deps/*.whl /wheels/storyforge_origin-*.whl \
    && pip check \
    && storyforge --help >/dev/null

RUN groupadd --system --gid 10001 storyforge \
    && useradd --system --uid 10001 --gid storyforge --create-home \
       --home-dir /home/storyforge --shell /usr/sbin/nologin storyforge

COPY --chmod=0755 docker/healthcheck.py /usr/local/bin/storyforge-healthcheck

WORKDIR /home/storyforge
USER 10001:10001

# `serve` listens on every interface inside the container.
ENV HOST=0.0.0.0 \
    PORT=8080
EXPOSE 8080

# serve drains in-flight answers, worker stops claiming and hands back unfinished jobs.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["storyforge-healthcheck"]

ENTRYPOINT ["storyforge"]
CMD ["serve"]
