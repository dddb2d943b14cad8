#!/usr/bin/env bash
# Installs the Debian 12 packages fedlr needs to build, test and run its demo.
# Idempotent: installs only what is missing. Run as root (or with sudo).
set -euo pipefail
PKGS=(build-essential cmake pkg-config git
      libzmq3-dev libprotobuf-c-dev protobuf-c-compiler libopenblas-dev libuv1-dev zlib1g-dev
      libinih-dev dataset-fashion-mnist python3 python3-numpy libxml2-utils
      python3-zmq python3-protobuf protobuf-compiler python3-crcmod python3-torch python3-pip python3-setuptools
      iproute2 iptables valgrind tcpdump procps)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
