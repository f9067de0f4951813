#!/bin/sh
# Guest side of the vmsnap relay: runs `vmsnap run --json --external` with the
# virtio-serial port org.vmsnap.relay itself as its stdin and stdout (the host
# reads the `frozen` line there and answers `snapshot-done`), one read-write
# open file description shared by both, as a backup extension would hand it
# over. After vmsnap exits, that description's flags go to
# /run/vmtest/relay.flags (vmsnap must not leave it O_NONBLOCK). vmsnap's pid
# goes to /run/vmtest/vmsnap.pid.
#
# Usage: relay.sh CONFIG
set -u
exec 3<>/dev/virtio-ports/org.vmsnap.relay
/usr/local/sbin/vmsnap run --json --external --config "$1" <&3 >&3 2>/run/vmtest/vmsnap.err &
vmsnap=$!
echo "$vmsnap" >/run/vmtest/vmsnap.pid
wait "$vmsnap"
code=$?
grep '^flags:' "/proc/$$/fdinfo/3" >/run/vmtest/relay.flags
exit "$code"
