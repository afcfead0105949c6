#!/usr/bin/env bash
# `make image`: build the task-assistant container image with buildah, no daemon and no registry.
#
# The Containerfile starts FROM ${BASE_IMAGE} (python:3.11-slim-bookworm by default). No registry
# is reachable on the machines this was written on, so this script first makes a local stand-in
# for that image from Debian's own packages: debootstrap (minbase) bookworm with python3 and
# python3-venv (Python 3.11, as in the official image), imported with buildah as
# $BASE_NAME. The root filesystem tarball is kept in ~/.cache/task-assistant-image/ (IMAGE_CACHE;
# outside the checkout, so a fresh clone on the same machine reuses it) and the base image in buildah's
# storage, so only the first run pays for debootstrap.
#
# Environment (all optional):
#   IMAGE            image to build                    (default localhost/task-assistant:latest)
#   BASE_IMAGE       use this base instead of building the Debian one (e.g. python:3.11-slim-bookworm
#                    where a registry is reachable)
#   DEBIAN_MIRROR    Debian mirror for debootstrap     (default: the one in /etc/apt/sources.list*)
#   UV_VERSION       uv installed from PyPI in the build stage (default: the Containerfile's)
#   BUILDAH          buildah command                   (default: buildah --storage-driver vfs)
#   CA_BUNDLE        a CA bundle the build stage trusts for PyPI (not copied into the image);
#                    default: the host's bundle, which carries any TLS-intercepting proxy's CA
set -euo pipefail

cd "$(dirname "$0")/../.."
IMAGE=${IMAGE:-localhost/task-assistant:latest}
CACHE=${IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/task-assistant-image}
BASE_NAME=${BASE_NAME:-localhost/task-assistant-base:bookworm}
read -r -a BUILDAH <<<"${BUILDAH:-buildah --storage-driver vfs}"
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
SUITE=bookworm
# Packages on top of minbase: what python:3.11-slim-bookworm also has (interpreter, venv/ensurepip,
# CA certificates, /etc/services) and nothing else.
PACKAGES=python3,python3-venv,ca-certificates,netbase

log() { printf '==> [%s] %s\n' "$(date +%T)" "$*" >&2; }

debian_mirror() {
    if [[ -n ${DEBIAN_MIRROR:-} ]]; then echo "$DEBIAN_MIRROR"; return; fi
    # deb822 sources (URIs: ...) first, then one-line sources (deb URL suite ...); skip security.
    local uri
    uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
          | awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' | grep -v security | head -n1 || true)
    if [[ -z $uri ]]; then
        uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
              | awk -v s="$SUITE" '$1 == "deb" && $0 ~ s {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' \
              | grep -v security | head -n1 || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

have_image() { "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1; }

build_base() {
    local tarball=$CACHE/$SUITE-rootfs.tar
    if [[ ! -s $tarball ]]; then
        [[ $EUID == 0 ]] || { echo "debootstrap needs root: run make image as root" >&2; exit 1; }
        command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }
        local mirror rootfs=$CACHE/rootfs
        mirror=$(debian_mirror)
        log "debootstrap --variant=minbase $SUITE from $mirror (once; cached in $tarball)"
        rm -rf "$rootfs" && mkdir -p "$CACHE"
        echo '*' >"$CACHE/.gitignore"  # the cache ignores itself
        debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
            || { tail -n 20 "$CACHE/debootstrap.log" >&2; exit 1; }
        chroot "$rootfs" apt-get clean
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/var/cache/debconf/*-old
        tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
    fi
    log "importing $tarball as $BASE_NAME"
    local ctr
    ctr=$("${BUILDAH[@]}" from scratch)
    "${BUILDAH[@]}" add "$ctr" "$tarball" / >/dev/null
    "${BUILDAH[@]}" config --env LANG=C.UTF-8 \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd python3 --label org.opencontainers.image.description="Debian $SUITE minbase + python3 (local stand-in for python:3.11-slim-bookworm)" \
        "$ctr"
    "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$BASE_NAME" >/dev/null
}

if [[ -z ${BASE_IMAGE:-} ]]; then
    command -v buildah >/dev/null || { echo "buildah is missing: apt-get install -y buildah" >&2; exit 1; }
    have_image "$BASE_NAME" || build_base
    BASE_IMAGE=$BASE_NAME
fi

# Skip the build when nothing that goes into the image changed: a hash of the build context, the
# Containerfile, the base image's id and the build arguments is kept as a label on the image.
inputs_hash() {
    {
        find Containerfile .containerignore pyproject.toml uv.lock README.md alembic.ini migrations backend \
            -type f -not -path '*/__pycache__/*' -not -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
        "${BUILDAH[@]}" inspect --type image --format '{{.FromImageID}}' "$BASE_IMAGE" 2>/dev/null || echo "$BASE_IMAGE"
        echo "UV_VERSION=${UV_VERSION:-}"
    } | sha256sum | cut -c1-16
}
LABEL_KEY=io.task-assistant.build-inputs
hash=$(inputs_hash)
old_id=$("${BUILDAH[@]}" inspect --type image --format '{{.FromImageID}}' "$IMAGE" 2>/dev/null || true)
if [[ -n $old_id && -z ${FORCE:-} ]] \
   && [[ $("${BUILDAH[@]}" inspect --type image --format "{{index .Docker.Config.Labels \"$LABEL_KEY\"}}" "$IMAGE") == "$hash" ]]; then
    log "$IMAGE is up to date (inputs $hash; FORCE=1 rebuilds)"
    exit 0
fi

args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --label "$LABEL_KEY=$hash")
[[ -n ${UV_VERSION:-} ]] && args+=(--build-arg "UV_VERSION=$UV_VERSION")
[[ -s $CA_BUNDLE ]] && args+=(--secret "id=ca_bundle,src=$CA_BUNDLE")

log "building $IMAGE from $BASE_IMAGE (inputs $hash)"
# --format docker: OCI image configs have no HEALTHCHECK. --layers=false: with the vfs driver
# every cached layer is a full copy of the tree (a layered build took 4-6 min here, this one
# about 1 min); the uv cache mount keeps the dependency install quick instead.
"${BUILDAH[@]}" build --isolation chroot --layers=false --format docker "${args[@]}" \
    -f Containerfile -t "$IMAGE" .
new_id=$("${BUILDAH[@]}" inspect --type image --format '{{.FromImageID}}' "$IMAGE")
if [[ -n $old_id && $old_id != "$new_id" ]]; then
    "${BUILDAH[@]}" rmi "$old_id" >/dev/null 2>&1 || true  # the previous build, now untagged
fi
"${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}} {{.ID}} {{.Size}}' "$IMAGE" >&2
