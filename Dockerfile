# syntax=docker/dockerfile:1
# Ferry's image: one image for every role (`docker run ferry worker`, `docker run ferry api`, `ferry status`…).
# Node 24, the newest of the majors Ferry supports and CI tests (package.json engines: 22.13+ or 24), and the
# one maintained longest (to April 2028; 22 to April 2027); bookworm-slim is the official Debian slim variant.
# test/package/node-versions.test.ts holds this image, engines, the README and .ci/run's versions together. test/deploy/dockerfile.test.ts holds the run stage to: production dependencies only, dist/ and
# the package files only, a non-root user, HEALTHCHECK, ENTRYPOINT tini -- ferry. docs/production.md explains.
#
# Never baked in: the services file (mount it, FERRY_SERVICES), tokens and FERRY_SECRETS_KEY (an env file, a
# compose or Kubernetes secret: FERRY_SECRETS_KEY_FILE). .dockerignore keeps them out of the build context.

ARG NODE_IMAGE=node:24-bookworm-slim

# ---- build: every dependency (TypeScript), then dist/ ----
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: no dependency's install script runs, and package.json's own `prepare` (which builds) does
# not run before the sources are here; the build is the explicit step below.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---- run: production dependencies and dist/ only ----
FROM ${NODE_IMAGE} AS run
# tini as PID 1: forwards SIGTERM to Node (which then drains its jobs) and reaps zombies.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production \
    HOST=0.0.0.0
WORKDIR /app
COPY package.json package-lock.json ./
# --omit=dev alone still installs TypeScript: @bull-board/api's valibot names it as an optional peer, so npm
# marks it devOptional and keeps it unless optional packages are omitted too. --omit=optional also drops
# msgpackr-extract, a native speed-up msgpackr falls back from (pure JS); nothing else is optional.
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force
COPY --from=build /src/dist ./dist
# `ferry` on PATH without npm link: the bin of package.json, made executable.
RUN chmod 0755 dist/cli/main.js \
 && ln -s /app/dist/cli/main.js /usr/local/bin/ferry
# The node image's unprivileged user (uid 1000); the app files stay root-owned, so read-only to Ferry.
USER node
EXPOSE 8080 9464
# api: HOST:PORT/healthz; worker: its metrics server's /healthz (FERRY_METRICS_PORT); other commands: healthy.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "/app/dist/cli/healthcheck.js"]
ENTRYPOINT ["tini", "--", "ferry"]
CMD ["--help"]
