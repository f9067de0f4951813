#!/usr/bin/env bash
# Installs what vmsnap's tests need on a fresh Debian machine (as root):
# filesystem tools for loop-mounted test filesystems, MariaDB and PostgreSQL
# (the tests start their own instances; the packaged services stay stopped),
# and the npm packages
# (Deno and Bun come from npm). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(util-linux mount e2fsprogs xfsprogs btrfs-progs mariadb-server mariadb-client postgresql-15)
# Redis and SQLite plugins (issue 15): the tests start their own redis-server on a private socket.
packages+=(redis-server sqlite3)
# Hook mode (issue 10): the tests start their own qemu-ga on a private socket.
packages+=(qemu-guest-agent)
# Operations (issue 13): the arm64 binary under emulation, the .deb's checks, the units, the man page.
packages+=(qemu-user-static libc6-arm64-cross binutils lintian systemd man-db groff-base python3-jsonschema rpm)
# vmtest (issue 14): builds a Debian guest image and boots it under QEMU (TCG).
packages+=(mmdebstrap qemu-system-x86 qemu-utils)
# External handshake over a character device (tests/char_stdin.py: a TUN device in a network namespace).
packages+=(python3 iproute2)
# Consistency groups (issue 24): the tests start their own etcd (one node, or three on loopback), with
# TLS certificates made by openssl; members run in network namespaces (iproute2).
packages+=(etcd-server etcd-client openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# qemu-guest-agent: the hook tests start their own qemu-ga on a private socket. The packaged
# service must not run (it would answer a virtio channel, and could freeze this machine's
# filesystems): stopped and masked where systemd runs, stopped where it does not.
if [ -d /run/systemd/system ]; then
  systemctl disable --now qemu-guest-agent.service >/dev/null 2>&1 || true
  systemctl mask qemu-guest-agent.service >/dev/null 2>&1 || true
elif [ -x /etc/init.d/qemu-guest-agent ]; then
  /etc/init.d/qemu-guest-agent stop >/dev/null 2>&1 || true
fi
# etcd: the group tests start their own on free loopback ports with private data; the packaged
# service (port 2379, /var/lib/etcd) must not run: stopped and masked, or stopped.
if [ -d /run/systemd/system ]; then
  systemctl disable --now etcd.service >/dev/null 2>&1 || true
  systemctl mask etcd.service >/dev/null 2>&1 || true
elif [ -x /etc/init.d/etcd ]; then
  /etc/init.d/etcd stop >/dev/null 2>&1 || true
fi
for tool in losetup mount fsfreeze mkfs.ext4 mkfs.xfs mkfs.btrfs mariadbd mariadb-install-db /usr/lib/postgresql/15/bin/postgres \
  redis-server sqlite3 qemu-ga qemu-aarch64-static readelf dpkg-deb lintian systemd-analyze man rpmbuild \
  python3 ip unshare etcd etcdctl openssl; do
  command -v "$tool" >/dev/null || { echo "setup: $tool is missing after install" >&2; exit 1; }
done

npm ci --no-audit --no-fund --loglevel=error
./node_modules/deno/deno --version | head -1
echo "bun $(./node_modules/bun/bin/bun.exe --version)"
