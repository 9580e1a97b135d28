#!/bin/sh
# Runs in the power-cut guest as root, cwd /payload (read-only), data disk at /data.
# Usage: start.sh MODE SEGMENT_BYTES
exec ./marconi serve --listen "0.0.0.0:$POWERCUT_GUEST_PORT" --data-dir /data/marconi --shards 1 \
    --durability "$1" --segment-size-bytes "$2" --log info
