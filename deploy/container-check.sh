#!/usr/bin/env bash
# Builds the image from deploy/Containerfile and runs deploy/compose/compose.yaml with podman:
# bootstrap in a container, the hub and two cities up, a lesson written in one city read in the
# other, everything down again. CI runs it (.ci/run); it needs root, podman, runc, debootstrap
# and podman-compose from Debian's packages.
#
#   deploy/container-check.sh [BIN_DIR]
#
# No container registry is reachable in CI, so the base image docker.io/library/debian:
# bookworm-slim is made with debootstrap from Debian's packages (kept as long as podman keeps
# it), and the binaries come from BIN_DIR (default target/debug, built by cargo on the host)
# instead of the Containerfile's Rust build stage. The containers talk over the network podman
# makes for the compose project inside this machine; the host reaches them through the ports
# compose.yaml publishes on its loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
bin_dir=$(cd "${1:-target/debug}" && pwd)
export CONTAINERS_CONF=$PWD/deploy/ci/containers.conf
work=$(mktemp -d)
project=sfs-container-check
cleanup() {
    (cd "$work/compose" 2>/dev/null && podman-compose -p "$project" -f compose.yaml down >/dev/null 2>&1) || true
    rm -rf "$work"
}
trap cleanup EXIT

# The base image, from Debian's packages.
if ! podman image exists docker.io/library/debian:bookworm-slim; then
    debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >/dev/null
    tar -C "$work/rootfs" -c . | podman import -q - docker.io/library/debian:bookworm-slim >/dev/null
    rm -rf "$work/rootfs"
fi

# The binaries, as the Containerfile's build stage would leave them in /out/.
mkdir -p "$work/binaries"
# Without debug symbols: a debug build is ten times larger, and CI's disk is not.
for bin in sfs-node sfs; do
    strip -o "$work/binaries/$bin" "$bin_dir/$bin"
done
printf 'FROM scratch\nCOPY sfs-node sfs /out/\n' > "$work/binaries/Containerfile"
podman build -q -t localhost/sfs-binaries "$work/binaries" >/dev/null
podman build -q --build-arg BINARIES=localhost/sfs-binaries -f deploy/Containerfile -t stadforstad . >/dev/null
echo "container: built the image stadforstad"

# The federation, made in a container with the image's sfs-bootstrap, as compose.yaml says.
mkdir -p "$work/compose/federation"
cp deploy/compose/compose.yaml "$work/compose/"
chown 10001 "$work/compose/federation"
podman run --rm -v "$work/compose/federation:/federation" --entrypoint sfs-bootstrap \
    stadforstad --federation-host 0.0.0.0 /federation hub helsingborg malmo >/dev/null
(cd "$work/compose" && podman-compose -p "$project" -f compose.yaml up -d >/dev/null 2>&1)
echo "container: compose started the hub, helsingborg and malmo"

sfs() {
    "$bin_dir/sfs" --federation "$work/compose/federation/federation.json" \
        --ca "$work/compose/federation/pki/ca.crt" "$@"
}
tries=0
until sfs --node helsingborg lessons add --title "Written in a container" >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ $tries -gt 60 ]; then
        echo "container: helsingborg never answered" >&2
        (cd "$work/compose" && podman-compose -p "$project" -f compose.yaml logs) >&2 || true
        exit 1
    fi
    sleep 1
done
tries=0
until sfs --node malmo lessons list --all-cities 2>/dev/null | grep -q "Written in a container"; do
    tries=$((tries + 1))
    if [ $tries -gt 60 ]; then
        echo "container: the lesson never reached malmo" >&2
        (cd "$work/compose" && podman-compose -p "$project" -f compose.yaml logs) >&2 || true
        exit 1
    fi
    sleep 1
done
sfs --node hub cities list
echo "container: a lesson written in helsingborg reached malmo through the hub"
# Leave only the base image (made once) on the disk.
(cd "$work/compose" && podman-compose -p "$project" -f compose.yaml down >/dev/null 2>&1) || true
podman rmi -f stadforstad localhost/sfs-binaries >/dev/null 2>&1 || true
