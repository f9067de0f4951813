#!/usr/bin/python3
"""Runs a command with a non-seekable, non-tty character device as its stdin,
as virtio-serial is in a guest: a TUN device (/dev/net/tun), in a private
network namespace (run it under `unshare -n`; nothing leaves it).

Usage: unshare -n python3 char_stdin.py COMMAND [ARG...]

The command's stdout and stderr are this process's. Each line this process
reads on its own stdin is sent as one UDP datagram out through the TUN device,
so the command reads it on its stdin (after the IP and UDP headers, which
carry no newline of their own before the payload's leading one). When the
command exits, prints `flags=<octal>` on stderr: the file status flags of this
process's stdout, whose open file description the command shared, and exits
with the command's status.
"""
import fcntl
import os
import socket
import struct
import subprocess
import sys
import threading

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000

tun = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", b"vmsnaptun0", IFF_TUN | IFF_NO_PI))
subprocess.run(["ip", "addr", "add", "10.77.0.1/24", "dev", "vmsnaptun0"], check=True)
subprocess.run(["ip", "link", "set", "vmsnaptun0", "up"], check=True)

child = subprocess.Popen(sys.argv[1:], stdin=tun, stdout=1, stderr=2)
os.close(tun)
sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def relay():
    for line in sys.stdin:
        sender.sendto(("\n" + line).encode(), ("10.77.0.2", 9))


threading.Thread(target=relay, daemon=True).start()
code = child.wait()
print(f"flags={oct(fcntl.fcntl(1, fcntl.F_GETFL))}", file=sys.stderr, flush=True)
sys.exit(code if code >= 0 else 128 - code)
