#!/usr/bin/env sh
# Write the TLS material, node keys and SuperExec secrets that kustomization.yaml turns into
# Secrets, with fedkit's own PKI (deploy/pki.py, fedkit.flower.pki), into deploy/k8s/secrets/.
#   deploy/k8s/make-secrets.sh [NODES] [--host fleet.example.org ...]
# Extra --host names go into the SuperLink certificate (e.g. the public name of the Fleet
# API for SuperNodes outside the cluster). Runs with the repo's .venv, else `python`.
# Existing material is kept: delete deploy/k8s/secrets/ to rotate everything.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
nodes=${1:-3}
[ "$#" -gt 0 ] && shift
py="$root/.venv/bin/python"
[ -x "$py" ] || py=python
if [ -e "$here/secrets/superlink/ca.pem" ]; then
  echo "make-secrets: $here/secrets exists; delete it to make new material" >&2
  exit 1
fi
"$py" "$root/deploy/pki.py" "$here/secrets" --nodes "$nodes" --target k8s --namespace fedkit "$@"
echo "next: kubectl apply -k $here   (public keys to register: $here/secrets/nodes/*.pub)"
