#!/usr/bin/env bash
# Install what is missing, then start the local stack (embedded Redis, Milvus Lite server, an ingest worker)
# and open the chat console; Ctrl-C stops it all. Arguments go to `expertbot up` (e.g. --no-chat).
# Services set in the environment or .env (REDIS_URL, MILVUS_URI) are used instead of the embedded ones.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
exec .venv/bin/expertbot up "$@"
