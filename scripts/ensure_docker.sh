#!/usr/bin/env bash
# Make sure a Docker engine answers (and debootstrap exists for the offline
# image build).  Idempotent: does nothing when `docker info` already works.
#
#   bash scripts/ensure_docker.sh
#
# Environment: DOCKERD_LOG (default /tmp/dockerd.log), DOCKERD_WAIT seconds
# to wait for the engine (default 60).
set -euo pipefail

log_file="${DOCKERD_LOG:-/tmp/dockerd.log}"
wait_s="${DOCKERD_WAIT:-60}"

say() { echo "ensure_docker: $*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
        say "need root for: $*"; return 1; fi
}

apt_install() {
    # apt-get update once per run, only if a package is really missing.
    if [ -z "${_apt_updated:-}" ]; then as_root apt-get update -qq; _apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap (for the offline sandbox image)"
    apt_install debootstrap || say "warning: could not install debootstrap; the offline image build will fail"
fi

if docker info >/dev/null 2>&1; then
    say "docker engine is up"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
    say "installing docker.io"
    apt_install docker.io
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
    say "starting dockerd (log: $log_file)"
    as_root bash -c "nohup dockerd > '$log_file' 2>&1 &"
fi

for _ in $(seq 1 "$((wait_s * 2))"); do
    if docker info >/dev/null 2>&1; then
        say "docker engine is up"
        exit 0
    fi
    sleep 0.5
done

say "ERROR: the docker engine did not answer within ${wait_s}s; last lines of $log_file:"
tail -n 20 "$log_file" >&2 || true
exit 1
