#!/usr/bin/env bash
# Installs the controller's system packages: what the lab, the tests and the benchmarks start for real.
# The Debian mirror is the machine's own (its apt sources); nothing here names a registry.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "install-deps: run as root (apt-get)" >&2; exit 2; }

packages=(systemd-container debootstrap nftables iproute2 openssh-client rsync python3-venv
          redis-server redis-tools nats-server chrony chromium
          # the pi4b-arm64 lab host: an arm64 userland run under QEMU user emulation (binfmt_misc)
          qemu-user-static binfmt-support
          # KeyDB is built once on the controller from a release archive (make keydb, roles/kvstore)
          build-essential autoconf libtool tcl uuid-dev libcurl4-openssl-dev libssl-dev libsystemd-dev pkg-config
          zlib1g-dev)
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done

# Valkey 8 comes from bookworm-backports: add that suite on the mirror this machine already uses.
backports=/etc/apt/sources.list.d/kvtestbed-backports.sources
if ! dpkg-query -W -f='${Status}' valkey-server 2>/dev/null | grep -q 'install ok installed'; then
  missing+=(valkey-server)
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    mirror=$(python3 "$(dirname "$0")/../src/kvtestbed/lab/debian_mirror.py")
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" > "$backports"
  fi
fi
# prometheus for promtool (config, rules and rule tests) and the redis exporter (the report's dashboards test),
# without their recommends (the hosts' exporters are the exporters role's business)
for p in prometheus prometheus-redis-exporter; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  pkgs=("${missing[@]/valkey-server/}")
  pkgs=("${pkgs[@]/prometheus-redis-exporter/}")
  pkgs=("${pkgs[@]/prometheus/}")
  apt-get install -y -qq ${pkgs[*]} >/dev/null
  norec=$(printf '%s\n' "${missing[@]}" | grep -E '^prometheus(-redis-exporter)?$' || true)
  if [ -n "$norec" ]; then
    apt-get install -y -qq --no-install-recommends $norec >/dev/null
  fi
  if printf '%s\n' "${missing[@]}" | grep -qx valkey-server; then
    apt-get install -y -qq -t bookworm-backports valkey-server >/dev/null
  fi
fi
# Debian's packages start their daemons where systemd runs; tests start their own on free ports.
for unit in redis-server valkey-server nats-server prometheus prometheus-redis-exporter; do
  systemctl disable --now "$unit" >/dev/null 2>&1 || true
done
# binfmt_misc: mounted where no systemd mounted it, and QEMU's aarch64 entry enabled (with the F flag Debian
# registers it with, so containers run aarch64 binaries without QEMU in their root)
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
fi
if [ -e /proc/sys/fs/binfmt_misc/status ] && ! grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
fi
echo "install-deps: ok"
