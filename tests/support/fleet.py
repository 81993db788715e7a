"""An SSH test fleet: QFieldCloud servers that Ansible reaches over real SSH on loopback ports.

Each server is a container of the offline image qfc-test/fleet-node:1 (scripts/build-test-image.sh fleet-node) with
its own root filesystem, running sshd on its own 127.0.0.1 port (host networking: no bridge on these machines).
The Docker Engine is shared: the node gets the host's socket and the host's Docker CLI and Compose plugin,
bind-mounted read-only, so `docker compose` inside a node drives the host engine. Each node holds its own
QFieldCloud-shaped compose project in /srv/qfieldcloud (tests/fixtures/stack) with its own COMPOSE_PROJECT_NAME and
.env. Full servers (group `qfieldcloud`) each have their own database in one throwaway PostgreSQL; worker-only nodes
(group `qfc_worker_nodes`) run only worker_wrapper and point at the database of the first server, as a worker
node points at its central database.

Used by the integration tests and bench/bench_fleet.py (as a library) and the molecule `fleet` scenario (as a CLI):
    python tests/support/fleet.py up --state DIR [--servers 3] [--workers 1] [--replicas 1]
    python tests/support/fleet.py down --state DIR
`up` writes DIR/inventory.yml and DIR/fleet.json, and starts a PostgreSQL that outlives it (stopped by `down`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402
from psycopg2 import sql  # noqa: E402

from tests.support.pgcluster import NEWEST, free_port, template_name  # noqa: E402
from tests.support.project import copy_project  # noqa: E402

IMAGE = os.environ.get("QFC_FLEET_NODE_IMAGE", "qfc-test/fleet-node:1")
FIXTURE = ROOT / "tests" / "fixtures" / "stack"
PROJECT_SRC = "/srv/qfieldcloud"
LABEL = "qfc-test.fleet"
SERVER_GROUP = "qfieldcloud"
WORKER_GROUP = "qfc_worker_nodes"


def docker(*args, check=True, timeout=300):
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError("docker %s failed (rc=%d): %s" % (" ".join(args), proc.returncode, proc.stderr.strip()))
    return proc


def host_cli_mounts():
    """The host's Docker CLI and Compose plugin, bind-mounted read-only where the CLI looks for plugins."""
    cli = shutil.which("docker")
    if not cli:
        raise RuntimeError("no docker CLI on PATH")
    plugin = docker("info", "--format",
                    '{{range .ClientInfo.Plugins}}{{if eq .Name "compose"}}{{.Path}}{{end}}{{end}}').stdout.strip()
    if not plugin:
        raise RuntimeError("the Docker CLI has no compose plugin (scripts/bootstrap.sh installs Compose v2)")
    return ["-v", "%s:/usr/bin/docker:ro" % os.path.realpath(cli),
            "-v", "%s:/usr/local/lib/docker/cli-plugins/docker-compose:ro" % os.path.realpath(plugin)]


class Node:
    """One server of the fleet, seen from the host."""

    def __init__(self, fleet, name, group, port, database):
        self.fleet = fleet
        self.name = name
        self.group = group
        self.port = port
        self.database = database
        self.container = "%s-%s" % (fleet.name, name)
        self.project = "%s-%s" % (fleet.name, name)

    @property
    def env_file(self):
        return PROJECT_SRC + "/.env"

    def exec(self, *args, check=True, timeout=300):
        return docker("exec", self.container, *args, check=check, timeout=timeout)

    def compose(self, *args, check=True):
        # From inside the project, as an operator would: COMPOSE_FILE's relative paths resolve against the cwd.
        return docker("exec", "-w", PROJECT_SRC, self.container, "docker", "compose", *args, check=check)

    def env_text(self):
        return self.exec("cat", self.env_file).stdout

    def env_value(self, key="QFIELDCLOUD_WORKER_REPLICAS"):
        values = [line.split("=", 1)[1].strip().strip("'\"") for line in self.env_text().splitlines()
                  if line.startswith(key + "=")]
        return values[-1] if values else None

    def write(self, path, text):
        subprocess.run(["docker", "exec", "-i", self.container, "sh", "-c", 'cat > "$1"', "sh", path],
                       input=text, text=True, check=True, capture_output=True)

    def backups(self):
        out = self.exec("sh", "-c", "ls -1 %s/.env.*~ 2>/dev/null || true" % PROJECT_SRC).stdout
        return [line for line in out.splitlines() if line]

    def running(self, service="worker_wrapper"):
        out = docker("ps", "--filter", "label=com.docker.compose.project=%s" % self.project,
                     "--filter", "label=com.docker.compose.service=%s" % service,
                     "--filter", "label=com.docker.compose.oneoff=False", "--format", "{{.Names}}").stdout
        return sorted(out.split())

    def services_running(self):
        out = docker("ps", "--filter", "label=com.docker.compose.project=%s" % self.project,
                     "--format", '{{.Label "com.docker.compose.service"}}').stdout
        return sorted(set(out.split()))

    def hostvars(self):
        return {
            "ansible_host": "127.0.0.1",
            "ansible_port": self.port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.fleet.key),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            "ansible_python_interpreter": "/usr/bin/python3",
            "qfc_project_src": PROJECT_SRC,
        }


class Fleet:
    """``servers`` full QFieldCloud servers and ``workers`` worker-only nodes, all reachable over SSH."""

    def __init__(self, state, pg, servers=3, workers=1, replicas=1, name=None):
        self.state = Path(state)
        self.pg = pg  # dict: host, port, user, password
        self.name = name or "qfcfleet-%s" % uuid.uuid4().hex[:6]
        self.replicas = replicas
        self.key = self.state / "id_ed25519"
        self.nodes = [Node(self, "qfc%d" % i, SERVER_GROUP, free_port(), "%s_qfc%d" % (self.name.replace("-", "_"), i))
                      for i in range(1, servers + 1)]
        central = self.nodes[0].database if self.nodes else "%s_central" % self.name.replace("-", "_")
        self.nodes += [Node(self, "worker%d" % i, WORKER_GROUP, free_port(), central)
                       for i in range(1, workers + 1)]

    def __getitem__(self, name):
        return next(n for n in self.nodes if n.name == name)

    @property
    def servers(self):
        return [n for n in self.nodes if n.group == SERVER_GROUP]

    @property
    def worker_nodes(self):
        return [n for n in self.nodes if n.group == WORKER_GROUP]

    # -- lifecycle -----------------------------------------------------------------------------
    def up(self):
        docker("image", "inspect", IMAGE)  # a clear error when scripts/bootstrap.sh has not built it
        self.state.mkdir(parents=True, exist_ok=True)
        if not self.key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.name, "-f", str(self.key)],
                           check=True)
        self.key.chmod(0o600)
        authorized = self.state / "authorized_keys"
        authorized.write_text((self.state / "id_ed25519.pub").read_text())
        authorized.chmod(0o600)
        self.create_databases()
        mounts = host_cli_mounts()
        try:
            for node in self.nodes:
                self.start_node(node, authorized, mounts)
            for node in self.nodes:
                self.wait_for_ssh(node)
        except BaseException:
            self.down()
            raise
        self.write_inventory()
        return self

    def create_databases(self):
        admin = psycopg2.connect(dbname="qfieldcloud_db", **self.pg)
        admin.autocommit = True
        try:
            for database in sorted({n.database for n in self.nodes}):
                with admin.cursor() as cur:
                    cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
                    # The cluster (pgcluster.py's CLI) keeps the newest recorded QFieldCloud schema as a template.
                    cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(database), sql.Identifier(template_name(NEWEST))))
        finally:
            admin.close()

    def start_node(self, node, authorized, mounts):
        docker("rm", "-f", node.container, check=False)
        sshd = ("mkdir -p /run/sshd && ssh-keygen -A >/dev/null && exec /usr/sbin/sshd -D -e -p %d "
                "-o ListenAddress=127.0.0.1 -o UsePAM=no -o PasswordAuthentication=no "
                "-o PermitRootLogin=prohibit-password" % node.port)
        docker("run", "--detach", "--init", "--name", node.container, "--network", "host",
               "--label", "%s=%s" % (LABEL, self.name),
               "-v", "/var/run/docker.sock:/var/run/docker.sock",
               "-v", "%s:/root/.ssh/authorized_keys:ro" % authorized, *mounts,
               IMAGE, "sh", "-c", sshd)
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "qfieldcloud"
            settings = {"COMPOSE_PROJECT_NAME": node.project, "QFIELDCLOUD_WORKER_REPLICAS": self.replicas,
                        "POSTGRES_HOST": self.pg["host"], "POSTGRES_PORT": self.pg["port"],
                        "POSTGRES_USER": self.pg["user"], "POSTGRES_PASSWORD": self.pg["password"],
                        "POSTGRES_DB": node.database, "POSTGRES_SSLMODE": "disable"}
            copy_project(FIXTURE, src, settings)
            node.exec("mkdir", "-p", "/srv")
            docker("cp", str(src), "%s:%s" % (node.container, PROJECT_SRC))
        node.exec("chmod", "600", node.env_file)
        if node.group == WORKER_GROUP:
            # A worker-only node runs nothing but worker_wrapper, against the central database.
            node.compose("up", "--detach", "--no-deps", "worker_wrapper")
        else:
            node.compose("up", "--detach")

    @staticmethod
    def wait_for_ssh(node, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", node.port), timeout=1) as conn:
                    if conn.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                logs = docker("logs", "--tail", "20", node.container, check=False)
                raise RuntimeError("sshd of %s did not answer on 127.0.0.1:%d: %s%s"
                                   % (node.name, node.port, logs.stdout, logs.stderr))
            time.sleep(0.1)

    def down(self):
        for node in self.nodes:
            docker("compose", "--project-name", node.project, "down", "--remove-orphans", "--timeout", "10",
                   check=False)
        ids = docker("ps", "-aq", "--filter", "label=%s=%s" % (LABEL, self.name), check=False).stdout.split()
        if ids:
            docker("rm", "-f", *ids, check=False)

    # -- inventory -----------------------------------------------------------------------------
    def inventory(self, **group_vars):
        groups = {}
        for node in self.nodes:
            groups.setdefault(node.group, {"hosts": {}})["hosts"][node.name] = node.hostvars()
        out = {"all": {"children": groups}}
        if group_vars:
            out["all"]["vars"] = group_vars
        return out

    def write_inventory(self, path=None, **group_vars):
        path = Path(path or self.state / "inventory.yml")
        path.write_text(json.dumps(self.inventory(**group_vars), indent=2) + "\n")  # JSON is YAML
        return path

    def describe(self):
        return {"name": self.name, "pg": self.pg, "replicas": self.replicas,
                "nodes": [{"name": n.name, "group": n.group, "port": n.port, "database": n.database,
                           "container": n.container, "project": n.project} for n in self.nodes]}


# -- CLI: the molecule scenario and the benchmark keep a fleet (and its PostgreSQL) across processes -----------
def _start_pg(state):
    out = state / "pg.json"
    out.unlink(missing_ok=True)
    with open(out, "w") as stdout, open(state / "pg.log", "w") as stderr:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "support" / "pgcluster.py")], stdout=stdout,
                                stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True)
    (state / "pg.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 120
    while not out.read_text().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("PostgreSQL did not start: %s" % (state / "pg.log").read_text()[-2000:])
        time.sleep(0.2)
    params = json.loads(out.read_text())
    return {k: params[k] for k in ("host", "port", "user", "password")}


def _stop_pg(state):
    pidfile = state / "pg.pid"
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            os.kill(pid, 0)  # ProcessLookupError once it is gone
            time.sleep(0.1)
    except ProcessLookupError:
        pass
    pidfile.unlink()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--state", required=True, type=Path, help="directory for the key, inventory and fleet.json")
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="worker-only nodes")
    parser.add_argument("--replicas", type=int, default=1, help="QFIELDCLOUD_WORKER_REPLICAS on every node at start")
    args = parser.parse_args(argv)
    state = args.state.resolve()
    described = state / "fleet.json"
    if described.exists():  # always start clean: an earlier fleet of this state directory goes first
        old = json.loads(described.read_text())
        fleet = Fleet(state, old["pg"], servers=0, workers=0, name=old["name"])
        fleet.nodes = [Node(fleet, n["name"], n["group"], n["port"], n["database"]) for n in old["nodes"]]
        fleet.down()
        described.unlink()
    _stop_pg(state)
    if args.action == "down":
        shutil.rmtree(state, ignore_errors=True)
        return
    state.mkdir(parents=True, exist_ok=True)
    pg = _start_pg(state)
    fleet = Fleet(state, pg, servers=args.servers, workers=args.workers, replicas=args.replicas)
    try:
        fleet.up()
    except BaseException:
        _stop_pg(state)
        raise
    described.write_text(json.dumps(fleet.describe(), indent=2) + "\n")
    print(json.dumps({"inventory": str(state / "inventory.yml"), "nodes": [n.name for n in fleet.nodes]}))


if __name__ == "__main__":
    main()
