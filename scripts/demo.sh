#!/usr/bin/env bash
# The main job on a local demo stack: start a QFieldCloud-shaped compose project with 2 workers, then scale it
# with playbooks/scale.yml and show the verified workers.  `scripts/demo.sh N` scales to N; `--down` removes it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${QFC_VENV:-$ROOT/.venv}
DEMO=$ROOT/.state/demo
PROJECT=$DEMO/qfieldcloud
export ANSIBLE_CONFIG=$ROOT/ansible.cfg

if [ "${1:-}" = "--down" ]; then
  [ -f "$PROJECT/.env" ] && (cd "$PROJECT" && docker compose down --remove-orphans --timeout 1)
  rm -rf "$DEMO"
  exit 0
fi
REPLICAS=${1:-4}

if [ ! -f "$PROJECT/.env" ]; then
  mkdir -p "$PROJECT"
  cp "$ROOT"/tests/fixtures/stack/docker-compose*.yml "$PROJECT"/
  # A project name of its own, so the demo never touches a real `qfieldcloud` project on this host.
  sed 's/^COMPOSE_PROJECT_NAME=.*/COMPOSE_PROJECT_NAME=qfcdemo/' "$ROOT/tests/fixtures/stack/env.example" >"$PROJECT/.env"
  chmod 600 "$PROJECT/.env"
fi
cat >"$DEMO/inventory.yml" <<INV
qfieldcloud:
  hosts:
    demo:
      ansible_connection: local
      ansible_python_interpreter: $VENV/bin/python
      qfc_project_src: $PROJECT
INV
echo "== demo stack in $PROJECT (project qfcdemo)"
(cd "$PROJECT" && docker compose up -d --quiet-pull 2>&1 | tail -n 2)

echo "== ansible-playbook playbooks/scale.yml -i $DEMO/inventory.yml -e qfc_worker_replicas=$REPLICAS --diff"
"$VENV/bin/ansible-playbook" "$ROOT/playbooks/scale.yml" -i "$DEMO/inventory.yml" -e "qfc_worker_replicas=$REPLICAS" --diff

echo "== running worker_wrapper containers, found by Compose labels"
docker ps --filter label=com.docker.compose.project=qfcdemo --filter label=com.docker.compose.service=worker_wrapper \
  --filter label=com.docker.compose.oneoff=False --format '{{.Names}}\t{{.Status}}' | sort
echo "== $(grep -E '^QFIELDCLOUD_WORKER_REPLICAS=' "$PROJECT/.env") in $PROJECT/.env"
echo "Remove the demo with: scripts/demo.sh --down"
