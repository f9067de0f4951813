#!/bin/sh
# Run in the guest after each boot (through the guest agent): installs the
# freshly built vmsnap and the test files from the payload disk, waits for the
# databases, and unmounts the payload (so nothing but the root filesystem is
# left to freeze).
set -eu
mkdir -p /mnt/vmtest
mount -o ro /dev/disk/by-id/virtio-vmtest-payload /mnt/vmtest
install -m 0755 -o root -g root /mnt/vmtest/vmsnap /usr/local/sbin/vmsnap
install -d -m 0755 /usr/local/lib/vmtest
install -m 0755 /mnt/vmtest/writer.sh /mnt/vmtest/relay.sh /usr/local/lib/vmtest/
install -d -m 0700 /etc/vmsnap
install -m 0600 /mnt/vmtest/vmsnap.json /etc/vmsnap/vmtest.json
install -m 0600 /mnt/vmtest/vmsnap-short-hold.json /etc/vmsnap/vmtest-short-hold.json
umount /mnt/vmtest
install -d -m 0700 /run/vmtest
i=0
until mariadb -e 'SELECT 1' >/dev/null 2>&1 && pg_isready -q -h /var/run/postgresql; do
  i=$((i + 1))
  [ "$i" -lt 300 ] || { echo "the databases did not start" >&2; exit 1; }
  sleep 1
done
mariadb -e 'CREATE DATABASE IF NOT EXISTS app'
vmsnap --version
