#!/bin/bash
# Guest-side write load: one commit per statement (INSERT seq), a new client
# per commit, and after each commit is acknowledged (the client exited 0) its
# number is appended to the ack file, on /run (tmpfs: never frozen). Stops
# when the stop file appears.
#
# Usage: writer.sh mysql|postgresql TABLE ACK_FILE STOP_FILE
set -u
kind=$1 table=$2 ack=$3 stop=$4
: > "$ack"
seq=0
while [ ! -e "$stop" ]; do
  seq=$((seq + 1))
  if [ "$kind" = mysql ]; then
    mariadb -e "INSERT INTO app.$table (seq) VALUES ($seq)" || exit 1
  else
    psql -X -q -h /var/run/postgresql -U postgres -d postgres -c "INSERT INTO $table (seq) VALUES ($seq)" || exit 1
  fi
  echo "$seq" >> "$ack"
done
