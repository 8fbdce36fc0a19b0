#!/usr/bin/env bash
# Test-only: installs what `pytest -m compose` needs on a Debian bookworm
# machine, idempotently (a second run changes nothing and downloads nothing):
#   - Debian's docker.io (engine 20.10, containerd, runc) and mmdebstrap (the
#     base images of tests/compose/images/ are built from Debian's packages);
#   - the Compose v2 CLI plugin, which bookworm does not ship (its
#     docker-compose 1.29 is Compose v1 and rejects our file's `name:` key):
#     the one static binary in Debian trixie's `docker-compose` package, fetched
#     with `apt-get download` through a temporary sources list, so the
#     system's own apt sources and state are left as they are.
# Run as root (CI is). Users install Docker their own way (README).
set -euo pipefail

PLUGIN_DIR="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
PLUGIN="$PLUGIN_DIR/docker-compose"
SUITE="${SWEEP_COMPOSE_SUITE:-trixie}"
MIRROR="${SWEEP_COMPOSE_MIRROR:-http://deb.debian.org/debian}"

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-docker.sh: apt-get install ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=900 update -q
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}"
fi

if [ -x "$PLUGIN" ] && "$PLUGIN" version >/dev/null 2>&1; then
  echo "install-docker.sh: $("$PLUGIN" version) already in $PLUGIN"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $SUITE main" > "$tmp/sources.list"
apt_tmp=(
  -o "Dir::Etc::SourceList=$tmp/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$tmp/lists"
  -o "Dir::Cache=$tmp/cache"
  -o "APT::Get::List-Cleanup=0"
)
echo "install-docker.sh: fetching docker-compose from $SUITE (temporary sources list)"
apt-get "${apt_tmp[@]}" update -q
(cd "$tmp" && apt-get "${apt_tmp[@]}" download docker-compose)
dpkg-deb -x "$tmp"/docker-compose_*.deb "$tmp/root"
mkdir -p "$PLUGIN_DIR"
install -m 0755 "$tmp/root/usr/libexec/docker/cli-plugins/docker-compose" "$PLUGIN"
echo "install-docker.sh: $("$PLUGIN" version) installed in $PLUGIN"
