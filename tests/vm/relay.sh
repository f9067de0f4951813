#!/bin/sh
# Guest side of the vmsnap relay: runs `vmsnap run --json --external` with its
# stdin and stdout carried over the virtio-serial port org.vmsnap.relay (the
# host reads the `frozen` line there and answers `snapshot-done`). vmsnap's
# stdin and stdout are FIFOs on /run, and two `cat`s move the bytes to and
# from the port: given the port itself as stdin, vmsnap never sees the answer
# (Bun reads a character-device stdin as it would a file), and it makes its
# stdout non-blocking, which, on a shared port descriptor, makes every other
# reader of the port fail with EAGAIN. vmsnap's pid goes to /run/vmtest/vmsnap.pid.
#
# Usage: relay.sh CONFIG
set -u
port=/dev/virtio-ports/org.vmsnap.relay
in=/run/vmtest/relay-in.$$
out=/run/vmtest/relay-out.$$
exec 3<>"$port"
mkfifo -m 600 "$in" "$out"
cat <&3 >"$in" &
reader=$!
cat <"$out" >&3 &
writer=$!
/usr/local/sbin/vmsnap run --json --external --config "$1" <"$in" >"$out" 2>/run/vmtest/vmsnap.err &
vmsnap=$!
echo "$vmsnap" >/run/vmtest/vmsnap.pid
wait "$vmsnap"
code=$?
wait "$writer"
kill "$reader" 2>/dev/null
rm -f "$in" "$out"
exit "$code"
