#!/usr/bin/env bash
# Makes a base image from Debian's packages, for machines that reach no image registry:
#   docker/local-base.sh [image-name]        (default: pryv-local-base:bookworm; needs root and debootstrap)
set -euo pipefail
image="${1:-pryv-local-base:bookworm}"
suite="${SUITE:-bookworm}"
mirror="${MIRROR:-http://deb.debian.org/debian}"
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import - "$image"
echo "$image"
