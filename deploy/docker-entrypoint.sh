#!/bin/sh
# Start one service of the image: `<service> [args]`, or CHAT_SERVICE=<service> and `[args]`.
set -eu
cd /app
if [ $# -gt 0 ] && [ -f "services/$1/__main__.py" ]; then
    service=$1
    shift
else
    service=${CHAT_SERVICE:-}
fi
if [ -z "$service" ] || [ ! -f "services/$service/__main__.py" ]; then
    echo "usage: <service> [args...] or CHAT_SERVICE=<service>" >&2
    printf 'services:' >&2
    for main in services/*/__main__.py; do printf ' %s' "$(basename "$(dirname "$main")")" >&2; done
    echo >&2
    exit 64
fi
exec python -m "services.$service" "$@"
