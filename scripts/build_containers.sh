#!/usr/bin/env bash
# Build the CPU images of the step families with podman, without any container registry:
#   usage: scripts/build_containers.sh [FAMILY ...]     (default: train eval hub; run as root)
#   inference (vLLM on CPU, built FROM the eval image) is built only when named, after eval.
#
# 1. installs podman, runc and debootstrap from apt when missing;
# 2. switches podman to runc/cgroupfs only when a container cannot start with the defaults (crun fails in
#    sandboxes without setrlimit, see containers/README.md), with a drop-in file, never editing containers.conf;
# 3. creates localhost/emrepro-base:<version>: `debootstrap --variant=minbase bookworm` + python3 (3.11, the
#    version of the local CPU torch wheel), python3-venv, pip, imported with `podman import`;
# 4. builds localhost/emrepro-<family>:<version> (the names of image() in rules/common.smk) with
#    `--pull=never`, mounting the host's pip configuration, CA bundle and local wheel folders read-only at
#    build time, so they never end up in a layer.
# An image whose label org.emrepro.digest equals the digest of its inputs (Containerfile, the files it copies,
# base image id) is kept, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="$(sed -n 's/^CONTAINER_VERSION = "\(.*\)"/\1/p' rules/common.smk)"
BASE="localhost/emrepro-base:$VERSION"
FAMILIES=("$@")
((${#FAMILIES[@]})) || FAMILIES=(train eval hub)
log() { echo "[build_containers $(date +%T)] $*"; }

missing=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! podman image exists "$BASE"; then
    rootfs="$(mktemp -d /var/tmp/emrepro-rootfs.XXXXXX)"
    log "debootstrap bookworm into $rootfs"
    SECONDS=0
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
    rm -rf "$rootfs"
    log "base $BASE in ${SECONDS}s"
fi

if ! podman run --rm --network none "$BASE" true 2>/dev/null; then
    conf=/etc/containers/containers.conf.d/50-emrepro-runc.conf
    log "containers do not start with podman's defaults: writing $conf (runc, cgroupfs, ulimits)"
    mkdir -p "$(dirname "$conf")"
    cat > "$conf" <<'EOF'
# Written by emrepro's scripts/build_containers.sh: crun cannot set rlimits in this sandbox.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=16384:16384"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
    # exit status 3: podman is installed but cannot start containers here (tests/test_containers.py skips)
    podman run --rm --network none "$BASE" true || exit 3
fi

# The host's pip setup, made visible to RUN steps: one pip.conf with the effective settings and every
# local path it names (CA bundle, find-links folders, file:// indexes), mounted read-only.
pipconf="$(mktemp /var/tmp/emrepro-pip.XXXXXX.conf)"
trap 'rm -f "$pipconf"' EXIT
mounts=(--volume "$pipconf:/etc/pip.conf:ro")
{
    echo "[global]"
    "${PYTHON:-python3}" -m pip config list 2>/dev/null | sed -n "s/^\(:env:\|global\)\.\([a-z-]*\)='\(.*\)'$/\2 = \3/p" | sort -u -t= -k1,1
} > "$pipconf"
for path in $(sed -n 's/^\(cert\|find-links\|extra-index-url\|index-url\) = //p' "$pipconf"); do
    path="${path#file://}"
    [[ "$(basename "$path")" == simple ]] && path="$(dirname "$path")"  # a PEP 503 index links to ../../files
    [[ "$path" == /* && -e "$path" ]] && mounts+=(--volume "$path:$path:ro")
done
# torch==2.13.0 must resolve to the local +cpu wheel, never to PyPI's CUDA build (gigabytes of nvidia-*).
if ! grep -q '^find-links' "$pipconf"; then log "WARNING: no pip find-links: torch would come from PyPI (CUDA)"; fi

for family in "${FAMILIES[@]}"; do
    file="containers/$family.Containerfile"
    tag="localhost/emrepro-$family:$VERSION"
    # inference (vLLM CPU) stacks on the eval image, so evaluation steps find the vLLM server in it
    from="$BASE"
    [[ "$family" == inference ]] && from="localhost/emrepro-eval:$VERSION"
    base_id="$(podman image inspect --format '{{.Id}}' "$from")"
    # the digest of everything the build reads: the Containerfile, its COPY sources, the base image
    sources="$(awk '/^COPY /{for (i = 2; i < NF; i++) print $i}' "$file")"
    digest="$( (cat "$file"; echo "$base_id"; find $sources -type f -not -path '*/__pycache__/*' | sort \
        | xargs sha256sum) | sha256sum | cut -c1-16)"
    if [[ "$(podman image inspect --format '{{index .Labels "org.emrepro.digest"}}' "$tag" 2>/dev/null)" == "$digest" ]]; then
        log "$tag is up to date ($digest)"
        continue
    fi
    log "building $tag"
    SECONDS=0
    podman build --pull=never --build-arg "BASE=$from" "${mounts[@]}" --label "org.emrepro.digest=$digest" \
        -f "$file" -t "$tag" . >"/var/tmp/emrepro-build-$family.log" 2>&1 \
        || { tail -n 30 "/var/tmp/emrepro-build-$family.log"; exit 1; }
    log "$tag built in ${SECONDS}s ($(podman image inspect --format '{{.Size}}' "$tag" | numfmt --to=iec))"
done
