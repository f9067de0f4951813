#!/usr/bin/env bash
# Builds the vmtest guest: a small Debian bookworm root filesystem (systemd,
# the cloud kernel, qemu-guest-agent, MariaDB, PostgreSQL 15) as a qcow2 disk,
# plus the kernel and initrd to boot it with. This file is the recipe: the
# cache key is a hash of it and of the mirror, so changing it rebuilds.
#
# Usage: build_image.sh OUT_DIR MIRROR SECURITY_MIRROR   (as root)
# Writes OUT_DIR/{root.qcow2,vmlinuz,initrd.img,manifest.txt}.
set -euo pipefail
out=$1 mirror=$2 security=$3
work=$(mktemp -d /var/tmp/vmtest-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root

# Packages already in the host's apt cache are hard-linked in rather than downloaded again.
mmdebstrap --mode=root --variant=minbase --format=directory \
  --include=systemd-sysv,udev,kmod,procps,util-linux,e2fsprogs,linux-image-cloud-amd64,initramfs-tools,qemu-guest-agent,mariadb-server,mariadb-client,postgresql-15 \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --aptopt='Acquire::Languages "none"' \
  --setup-hook='mkdir -p "$1/var/cache/apt/archives" && cp -al /var/cache/apt/archives/*.deb "$1/var/cache/apt/archives/" 2>/dev/null || true' \
  --customize-hook='
set -e
echo vmtest > "$1/etc/hostname"
printf "/dev/vda / ext4 rw,relatime,errors=remount-ro 0 1\n" > "$1/etc/fstab"
# MariaDB: binary log on (GTID positions), small buffers.
cat > "$1/etc/mysql/mariadb.conf.d/99-vmtest.cnf" <<CNF
[mysqld]
log-bin = binlog
server-id = 1
innodb_buffer_pool_size = 64M
performance_schema = off
CNF
# PostgreSQL: local connections trusted (the guest has no network and no users).
sed -i -E "s/^(local\s+all\s+\S+\s+)(peer|scram-sha-256|md5)/\1trust/" "$1/etc/postgresql/15/main/pg_hba.conf"
sed -i -E "s/^#?shared_buffers.*/shared_buffers = 32MB/" "$1/etc/postgresql/15/main/postgresql.conf"
# No login prompts, no timers: a quiet guest.
chroot "$1" systemctl mask getty@tty1.service serial-getty@ttyS0.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer man-db.timer >/dev/null 2>&1 || true
mkdir -p "$1/mnt/vmtest"
' \
  bookworm "$root" \
  "deb $mirror bookworm main" \
  "deb $mirror bookworm-updates main" \
  "deb $security bookworm-security main"

cp "$root"/boot/vmlinuz-* "$out/vmlinuz.new"
cp "$root"/boot/initrd.img-* "$out/initrd.img.new"
rm -rf "$root"/boot/* "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/*
chroot "$root" dpkg-query -W -f '${Package} ${Version}\n' > "$out/manifest.txt.new"

# The root filesystem straight from the directory (no partition table, no bootloader:
# qemu boots the kernel and initrd directly), 1 GiB free for the databases.
used=$(du -sm "$root" | cut -f1)
truncate -s $((used + 1024))M "$work/root.raw"
mkfs.ext4 -q -L vmroot -d "$root" "$work/root.raw"
qemu-img convert -f raw -O qcow2 "$work/root.raw" "$out/root.qcow2.new"
for f in vmlinuz initrd.img manifest.txt root.qcow2; do mv "$out/$f.new" "$out/$f"; done
