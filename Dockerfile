# Veil coordinator image.
#
#   docker build -t veil-coordinator:0.1.0 .
#
# Two stages on the same Node 24 LTS base: `build` installs all dependencies,
# generates the protocol types and the Prisma client and compiles the packages,
# then prunes the dev dependencies; `runtime` copies only the compiled
# packages, the production node_modules, the .proto files and the migrations.
#
# The base image is a build argument so that mirrors or locally built
# stand-ins can be used without editing this file:
#   docker build --build-arg NODE_IMAGE=registry.example/node:24.21.0-bookworm-slim .
# Pin it by digest in production (node:24.21.0-bookworm-slim@sha256:...).
#
# Configuration is only environment variables (see docs/docker.md) and the
# read-only mount of the coordinator's public key material at /etc/veil/keys
# (VEIL_KEYS_DIR; the coordinator refuses to start if it finds secret key material).
# No secret is baked in: NODE_ENV=production makes the coordinator refuse to
# start without VEIL_ADMIN_TOKEN and VEIL_AUDIT_TOKEN from the environment.
# HEALTHCHECK needs the Docker image format (`podman build --format docker`).

ARG NODE_IMAGE=node:24.21.0-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
ENV CHECKPOINT_DISABLE=1 PRISMA_HIDE_UPDATE_MESSAGE=1 npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
# Manifests first: the dependency layer is rebuilt only when they change.
COPY package.json package-lock.json ./
COPY packages/protocol/package.json packages/protocol/
COPY packages/privacy/package.json packages/privacy/
COPY packages/crypto/package.json packages/crypto/
COPY packages/export/package.json packages/export/
COPY packages/custodian/package.json packages/custodian/
COPY packages/server/package.json packages/server/
COPY packages/client-sdk/package.json packages/client-sdk/
COPY packages/cli/package.json packages/cli/
# --ignore-scripts: the root `prepare` (the build) runs below, once the sources
# are in; no dependency needs its install script (no native addons).
RUN --mount=type=cache,target=/root/.npm npm ci --ignore-scripts
COPY tsconfig.base.json ./
COPY proto proto
# The proto type generator shared by @veil/protocol's and @veil/custodian's `gen`.
COPY scripts/gen-proto-types.mjs scripts/
COPY packages packages
# The packages only (the root `build` also typechecks examples/ and e2e/):
# `packages/cli` references every other package. `gen` needs a syntactically
# valid DATABASE_URL only; nothing connects.
# Pruning needs --omit=optional too: the Prisma CLI and TypeScript are optional
# peers of @prisma/client, hence "devOptional" in the lockfile, which
# --omit=dev alone keeps (the only optional production dependency,
# pg-cloudflare, is for Cloudflare Workers).
RUN DATABASE_URL=postgresql://build@127.0.0.1:5432/build npm run gen \
 && node_modules/.bin/tsc -b packages/cli \
 && npm prune --omit=dev --omit=optional --ignore-scripts \
 && rm -rf node_modules/.cache

FROM ${NODE_IMAGE} AS runtime
# glibc's malloc tunables for every process of the image (coordinator, custodians): @veil/server's
# COORDINATOR_ENVIRONMENT (packages/server/src/runtime-options.ts, which says why; its test checks this line).
ENV GLIBC_TUNABLES=glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=67108864
ENV NODE_ENV=production \
    VEIL_HOST=0.0.0.0 \
    VEIL_GRPC_PORT=50051 \
    VEIL_HTTP_PORT=8080 \
    VEIL_DATA_DIR=/var/lib/veil \
    VEIL_MIGRATE_ON_START=true
# VEIL_KEYS_DIR is not set here: with it the coordinator requires
# coordinator-key.json there. Mount the public half of `veil keys generate`
# read-only at /etc/veil/keys and set VEIL_KEYS_DIR=/etc/veil/keys (compose does).
WORKDIR /app
# Everything under /app belongs to root and is read-only for the coordinator's user.
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules node_modules
COPY --from=build /app/proto proto
COPY --from=build /app/packages/protocol/package.json packages/protocol/
COPY --from=build /app/packages/protocol/dist packages/protocol/dist
COPY --from=build /app/packages/privacy/package.json packages/privacy/
COPY --from=build /app/packages/privacy/dist packages/privacy/dist
COPY --from=build /app/packages/crypto/package.json packages/crypto/
COPY --from=build /app/packages/crypto/dist packages/crypto/dist
COPY --from=build /app/packages/export/package.json packages/export/
COPY --from=build /app/packages/export/dist packages/export/dist
COPY --from=build /app/packages/custodian/package.json packages/custodian/
COPY --from=build /app/packages/custodian/dist packages/custodian/dist
COPY --from=build /app/packages/server/package.json packages/server/
COPY --from=build /app/packages/server/dist packages/server/dist
COPY --from=build /app/packages/server/prisma/migrations packages/server/prisma/migrations
COPY --from=build /app/packages/client-sdk/package.json packages/client-sdk/
COPY --from=build /app/packages/client-sdk/dist packages/client-sdk/dist
COPY --from=build /app/packages/cli/package.json packages/cli/
COPY --from=build /app/packages/cli/dist packages/cli/dist
# The data directory (blob store) is the only writable path; a named volume
# mounted there starts with this ownership. UID/GID 1000 is the `node` user of
# the official image, given numerically so `runAsNonRoot` can verify it.
RUN mkdir -p /var/lib/veil /etc/veil/keys \
 && chown 1000:1000 /var/lib/veil \
 && chmod 0750 /var/lib/veil
USER 1000:1000
EXPOSE 50051 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "const tls = !!process.env.VEIL_TLS_CERT_FILE; require(tls ? 'node:https' : 'node:http').get({ host: '127.0.0.1', port: process.env.VEIL_HTTP_PORT || 8080, path: '/v1/ready', rejectUnauthorized: false, timeout: 4000 }, (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))"]
# The coordinator handles SIGTERM itself (graceful close), so node can be PID 1.
# The Node.js options are @veil/server's COORDINATOR_NODE_OPTIONS (packages/server/src/runtime-options.ts,
# which says why; its test checks this line).
ENTRYPOINT ["node", "--initial-old-space-size=128", "/app/packages/cli/dist/bin/veil.js"]
CMD ["server"]
