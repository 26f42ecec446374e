#!/usr/bin/env bash
# The mongo image's entrypoint, wrapped for docker-compose.yml. It runs as root, before the image's own
# docker-entrypoint.sh (which then drops to the mongodb user), and prepares what mongod reads as that user,
# in /run/eventflow (a tmpfs: nothing of it is written to disk):
#
# - a key file: a replica set with authentication needs one for its members' internal authentication
#   (--keyFile). This replica set has one member, so a new random key at every start serves.
# - the root password: compose mounts secrets/mongo-root-password with its owner and mode on the host
#   (0600, owned by whoever ran `eventflow compose-secrets`), which the mongodb user cannot read; a copy
#   readable by mongodb only is given to the image's entrypoint as MONGO_INITDB_ROOT_PASSWORD_FILE.
set -Eeuo pipefail

private=/run/eventflow
mkdir -p "$private"
chown mongodb:mongodb "$private"
chmod 0700 "$private"

head -c 756 /dev/urandom | base64 -w 0 > "$private/keyfile"
chown mongodb:mongodb "$private/keyfile"
chmod 0400 "$private/keyfile"

install -o mongodb -g mongodb -m 0400 /run/secrets/mongo_root_password "$private/mongo-root-password"
export MONGO_INITDB_ROOT_PASSWORD_FILE="$private/mongo-root-password"

exec docker-entrypoint.sh "$@"
