#!/bin/sh
# The image's entrypoint: the first argument names a role, the rest are that program's flags.
#   superlink ARGS   flower-superlink ARGS
#   supernode ARGS   flower-supernode ARGS
#   superexec ARGS   flower-superexec ARGS (e.g. --executor kubernetes --executor-config F)
#   fedkit ARGS      the fedkit CLI (fedkit deploy local, fedkit audit verify, ...)
#   flwr ARGS        Flower's CLI (flwr run, flwr supernode register, flwr ls, ...)
# Anything else runs as given (flwr-serverapp and flwr-clientapp, what Flower's Kubernetes
# executor puts in a task pod's command, bypass this script).
set -eu
mkdir -p "${FLWR_HOME:-/var/lib/fedkit/flwr}" 2>/dev/null || true
role="${1:-superlink}"
[ "$#" -gt 0 ] && shift
case "$role" in
  superlink) exec flower-superlink "$@" ;;
  supernode) exec flower-supernode "$@" ;;
  superexec) exec flower-superexec "$@" ;;
  fedkit) exec fedkit "$@" ;;
  flwr) exec flwr "$@" ;;
  *) exec "$role" "$@" ;;
esac
