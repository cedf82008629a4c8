#!/usr/bin/env bash
# Build the crawl-worker image where no image registry is reachable (docs/deployment.md).
#
# The Dockerfile's PYTHON_IMAGE becomes a Debian bookworm base made from Debian's own packages with
# mmdebstrap and `docker import`; the host's local CA certificates (the ones update-ca-certificates reads)
# go into it, so pip inside the build trusts a TLS-intercepting proxy the host trusts. The base is cached
# (a tarball and the imported image) and rebuilt only when its recipe changes.
#
#   deploy/docker/build-offline.sh [TAG]            the worker image (default TAG: crawl-worker:local)
#   deploy/docker/build-offline.sh services [TAG]   Redis + Prometheus from Debian (crawl-worker-services:local)
#   deploy/docker/build-offline.sh base             just the base; prints its tag
#
# Needs root (mmdebstrap), a running dockerd, and Debian's mmdebstrap package.
set -euo pipefail
cd "$(dirname "$0")/../.."
what=image
case "${1:-}" in
  services|base) what=$1; shift ;;
esac
tag=${1:-crawl-worker:local}
[ "$what" = services ] && tag=${1:-crawl-worker-services:local}
cache=${CRAWL_WORKER_BASE_CACHE:-/var/cache/crawl-worker}
packages=python3.11,python3.11-venv,python-is-python3,ca-certificates
recipe=$(printf '%s\n' "bookworm minbase $packages" | sha256sum | cut -c1-12)
base=crawl-worker-base:bookworm-$recipe

if ! docker image inspect "$base" >/dev/null 2>&1; then
  mkdir -p "$cache"
  tarball=$cache/base-$recipe.tar
  if [ ! -s "$tarball" ]; then
    echo "base: mmdebstrap bookworm ($packages)"
    mmdebstrap --quiet --format=tar --variant=minbase --include="$packages" \
      --customize-hook='for c in /usr/local/share/ca-certificates/*.crt; do if [ -e "$c" ]; then cp "$c" "$1/usr/local/share/ca-certificates/"; fi; done; chroot "$1" update-ca-certificates >/dev/null' \
      bookworm "$tarball.part" http://deb.debian.org/debian
    mv "$tarball.part" "$tarball"
  fi
  docker import "$tarball" "$base" >/dev/null
fi

if [ "$what" = base ]; then
  echo "$base"
  exit 0
fi
start=$(date +%s%N)
if [ "$what" = services ]; then
  DOCKER_BUILDKIT=0 docker build --quiet -f deploy/docker/services.Dockerfile --build-arg BASE_IMAGE="$base" \
    -t "$tag" deploy/docker >/dev/null
else
  DOCKER_BUILDKIT=0 docker build --quiet -f deploy/docker/Dockerfile --build-arg PYTHON_IMAGE="$base" -t "$tag" . >/dev/null
fi
ms=$((($(date +%s%N) - start) / 1000000))
bytes=$(docker image inspect -f '{{.Size}}' "$tag")
printf 'image %s: built in %d.%d s on base %s, size %d MB\n' "$tag" $((ms / 1000)) $((ms % 1000 / 100)) "$base" $((bytes / 1000000))
