#!/usr/bin/env bash
# The main job on a local demo stack: a throwaway PostgreSQL with QFieldCloud's schema and a queue of jobs, a
# QFieldCloud-shaped compose project whose 2 worker_wrapper containers are simulated workers that dequeue like
# upstream, then playbooks/scale.yml scales them (default to 4) and playbooks/queue_report.yml shows the queue.
#   scripts/demo.sh [--name NAME] [N]     scale to N workers (make demo NAME=... REPLICAS=...)
#   scripts/demo.sh [--name NAME] --down  remove that demo's stack and database
# NAME (default qfcdemo) is the Compose project name and the demo's directory (.state/demo-NAME), so two demos
# on one host never touch each other's containers, database or files.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${QFC_VENV:-$ROOT/.venv}
NAME=qfcdemo
if [ "${1:-}" = "--name" ]; then NAME=${2:-}; shift 2; fi
# Compose's own rule for a project name; anything else would be renamed by Compose and break the label lookups.
[[ "$NAME" =~ ^[a-z0-9][a-z0-9_-]*$ ]] || { echo "demo: NAME must be a Compose project name ([a-z0-9][a-z0-9_-]*), got '$NAME'" >&2; exit 2; }
DEMO=$ROOT/.state/demo-$NAME
PROJECT=$DEMO/qfieldcloud
export ANSIBLE_CONFIG=$ROOT/ansible.cfg

down() {
  if [ -f "$PROJECT/.env" ]; then
    docker compose --project-directory "$PROJECT" down --remove-orphans --timeout 10 >/dev/null 2>&1 || true
  fi
  if [ -f "$DEMO/pg.pid" ]; then
    kill "$(cat "$DEMO/pg.pid")" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$(cat "$DEMO/pg.pid")" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$DEMO"
}
if [ "${1:-}" = "--down" ]; then down; exit 0; fi
REPLICAS=${1:-4}
down  # a fresh demo every time
mkdir -p "$DEMO"

echo "== throwaway PostgreSQL with QFieldCloud's schema"
setsid "$VENV/bin/python" "$ROOT/tests/support/pgcluster.py" >"$DEMO/pg.json" 2>"$DEMO/pg.log" </dev/null &
echo $! >"$DEMO/pg.pid"
for _ in $(seq 1 300); do [ -s "$DEMO/pg.json" ] && break; sleep 0.2; done
[ -s "$DEMO/pg.json" ] || { cat "$DEMO/pg.log" >&2; echo "PostgreSQL did not start" >&2; exit 1; }
PG=$(cat "$DEMO/pg.json")
"$VENV/bin/python" "$ROOT/scripts/demo_seed.py" "$PG"
field() { "$VENV/bin/python" -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$PG" "$1"; }

echo "== compose project in $PROJECT (project $NAME, 2 simulated workers, 3 s per job)"
mkdir -p "$PROJECT"
cp "$ROOT/tests/fixtures/stack-db/docker-compose.yml" "$PROJECT/"
# A project name of its own, so the demo never touches a real `qfieldcloud` project on this host.
sed -e "s/^COMPOSE_PROJECT_NAME=.*/COMPOSE_PROJECT_NAME=$NAME/" \
    -e "s/^POSTGRES_PORT=.*/POSTGRES_PORT=$(field port)/" \
    -e "s/^POSTGRES_PASSWORD=.*/POSTGRES_PASSWORD=$(field password)/" \
    -e "s|^QFC_SIM_DIR=.*|QFC_SIM_DIR=$ROOT/tests/fixtures/worker_sim|" \
    -e 's/^QFC_SIM_JOB_S=.*/QFC_SIM_JOB_S=3/' \
    -e 's/^POSTGRES_SSLMODE=.*/POSTGRES_SSLMODE=disable/' \
    "$ROOT/tests/fixtures/stack-db/env.example" >"$PROJECT/.env"
chmod 600 "$PROJECT/.env"
(cd "$PROJECT" && docker compose up -d --quiet-pull 2>&1 | tail -n 1)
cat >"$DEMO/inventory.yml" <<INV
qfieldcloud:
  hosts:
    demo:
      ansible_connection: local
      ansible_python_interpreter: $VENV/bin/python
      qfc_project_src: $PROJECT
INV

echo "== ansible-playbook playbooks/scale.yml -i $DEMO/inventory.yml -e qfc_worker_replicas=$REPLICAS --diff"
"$VENV/bin/ansible-playbook" "$ROOT/playbooks/scale.yml" -i "$DEMO/inventory.yml" -e "qfc_worker_replicas=$REPLICAS" --diff

echo "== running worker_wrapper containers, found by Compose labels"
docker ps --filter "label=com.docker.compose.project=$NAME" --filter label=com.docker.compose.service=worker_wrapper \
  --filter label=com.docker.compose.oneoff=False --format '{{.Names}}\t{{.Status}}' | sort
echo "== $(grep -E '^QFIELDCLOUD_WORKER_REPLICAS=' "$PROJECT/.env") in $PROJECT/.env"

sleep 5
echo "== ansible-playbook playbooks/queue_report.yml (5 s later)"
"$VENV/bin/ansible-playbook" "$ROOT/playbooks/queue_report.yml" -i "$DEMO/inventory.yml" | sed -n '/Summarise/,/PLAY RECAP/p'
echo "Next: ansible-playbook playbooks/cleanup.yml -i $DEMO/inventory.yml --check   (then without --check)"
echo "Remove the demo with: scripts/demo.sh --name $NAME --down   (make demo-down NAME=$NAME)"
