#!/usr/bin/env bash
# Builds the base images docker/Dockerfile starts FROM, debian:bookworm and
# debian:bookworm-slim, locally with debootstrap, for machines that reach
# Debian's archive but no container registry. Skips the work when both images
# exist already (pass --force to rebuild them). Run as root, with a Docker
# daemon running; installs debootstrap when it is missing.
#
#   bash scripts/docker-base-images.sh [--force]
#
# Environment: FEDLR_DEBIAN_MIRROR (default http://deb.debian.org/debian),
# DOCKER (the docker client, default docker).
#
# The images are close to the official ones: a minbase debootstrap with the
# bookworm, bookworm-updates and bookworm-security sources; the slim image
# also drops documentation, man pages and locales and tells dpkg not to
# install them again (as the official -slim image does).
set -euo pipefail
MIRROR=${FEDLR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DOCKER=${DOCKER:-docker}
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }
if [ "$FORCE" -eq 0 ] && have_image debian:bookworm && have_image debian:bookworm-slim; then
  echo "base-images: debian:bookworm and debian:bookworm-slim exist (--force rebuilds them)"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "base-images: debootstrap needs root" >&2; exit 1; }
if ! command -v debootstrap >/dev/null; then
  echo "base-images: installing debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

ROOT=$(mktemp -d "${TMPDIR:-/tmp}/fedlr-rootfs.XXXXXX")
chmod 755 "$ROOT" # it becomes the image's /: mktemp made it 0700
trap 'rm -rf "$ROOT"' EXIT
echo "base-images: debootstrap --variant=minbase bookworm ($MIRROR)"
if ! debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" > "$ROOT.log" 2>&1; then
  tail -20 "$ROOT.log" >&2
  rm -f "$ROOT.log"
  echo "base-images: debootstrap failed" >&2
  exit 1
fi
rm -f "$ROOT.log"

# apt sources as in the official image (deb822), and its apt/dpkg settings.
rm -f "$ROOT/etc/apt/sources.list"
cat > "$ROOT/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
cat > "$ROOT/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::GzipIndexes "true";' > "$ROOT/etc/apt/apt.conf.d/docker-gzip-indexes"
echo 'APT::AutoRemove::SuggestsImportant "false";' > "$ROOT/etc/apt/apt.conf.d/docker-autoremove-suggests"
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/log/*.log \
  "$ROOT"/tmp/* "$ROOT"/etc/hostname "$ROOT"/etc/resolv.conf
echo "base-images: importing debian:bookworm"
tar -C "$ROOT" -c . | "$DOCKER" import --change 'CMD ["bash"]' - debian:bookworm >/dev/null

cat > "$ROOT/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
find "$ROOT/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$ROOT/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/usr/share/locale/* "$ROOT"/usr/share/lintian/*
echo "base-images: importing debian:bookworm-slim"
tar -C "$ROOT" -c . | "$DOCKER" import --change 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' debian
