"""Benchmark: playbooks/scale.yml on three servers of an SSH fleet against one server, same fleet, same run.

One fleet (tests/support/fleet.py: containers with their own sshd on loopback ports, reached by Ansible over real
SSH) and one throwaway PostgreSQL for the health gate. Every timed run is a real change: a round scales every case's
servers to 2 workers, the next round back to 1, and the cases use disjoint servers (one: qfc1; three: qfc2-4;
three with the default batches: qfc5-7), so no run finds its servers already at the count and nothing is reset
between runs. The order of the cases reverses every round so that drift on the machine hits all alike. After the
rounds, --max-servers servers are scaled in one batch (--big-runs times with --forks, once with the forks
ansible.cfg gives) and compared with the projection t(n) = t1 + k (n - 1) fitted to the one- and three-server
medians. `--write` replaces the bench_fleet section of docs/performance.md.

    .venv/bin/python bench/bench_fleet.py [--rounds 5] [--max-servers 10] [--big-runs 2] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench._docs import ensure_collection_link, write_section  # noqa: E402
from tests.support.fleet import Fleet  # noqa: E402
from tests.support.pgcluster import PgCluster  # noqa: E402

BIN = Path(sys.executable).parent
PLAYBOOK = ROOT / "playbooks" / "scale.yml"
MARK = ("<!-- bench_fleet:begin -->", "<!-- bench_fleet:end -->")
ONE, THREE, CANARY = "one", "three", "three_default_batches"
# The cases of a round: servers, qfc_serial (None: the playbook's default [1, "25%", "100%"]), batches expected.
CASES = {ONE: (["qfc1"], "100%", 1), THREE: (["qfc2", "qfc3", "qfc4"], "100%", 1),
         CANARY: (["qfc5", "qfc6", "qfc7"], None, 3)}
TARGET = 1.5  # issue: scaling three servers takes at most 1.5x the time of scaling one
# issue 11: controller CPU per host at most half of what it was before (11.3 s for 10 servers, 2026-11-29)
CPU_PER_HOST_BEFORE = 11.3 / 10
CPU_PER_HOST_TARGET = CPU_PER_HOST_BEFORE / 2
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
SUMMARY_TASK = "TASK [qfieldcloud.ops.scale : Rollout summary - host, before, after, result]"
ANSIBLE_DEFAULT_FORKS = 5


def configured_forks():
    """(forks, whether ansible.cfg or the environment sets it): what ansible-playbook uses without --forks."""
    proc = subprocess.run([str(BIN / "ansible-config"), "dump", "--only-changed", "--format", "json"], cwd=ROOT,
                          env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")), capture_output=True,
                          text=True, check=True)
    changed = {item["name"]: item["value"] for item in json.loads(proc.stdout) if "name" in item}
    return int(changed.get("DEFAULT_FORKS", ANSIBLE_DEFAULT_FORKS)), "DEFAULT_FORKS" in changed


def busy_cpu():
    """CPU seconds the whole machine has spent not idle (the fleet's servers run on the same cores)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(fields[:8]) - fields[3] - fields[4]) / ticks  # all but idle and iowait


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_scale(inventory, hosts, replicas, serial, batches, forks, task_cpu=False):
    """One timed ansible-playbook run: (wall s, machine CPU s, controller CPU s, per-task controller CPU or None).
    Fails loudly unless every host changed, none failed and the expected number of batches ran. ``task_cpu``: also
    record the controller CPU of each task (bench/callbacks/qfc_task_cpu.py: [[task, main s, children s], ...])."""
    extra = {"qfc_worker_replicas": replicas}
    if serial is not None:
        extra["qfc_serial"] = serial
    cmd = [str(BIN / "ansible-playbook"), str(PLAYBOOK), "-i", str(inventory), "--limit", ",".join(hosts),
           "-e", json.dumps(extra)]
    if forks:
        cmd += ["--forks", str(forks)]
    # A fresh ControlPath directory per run: each run opens its own SSH connections, as a rollout started from an
    # operator's shell does, instead of reusing the masters (ControlPersist=60s) that the previous run left.
    with tempfile.TemporaryDirectory(prefix="qfc-cp-") as control:
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_SSH_CONTROL_PATH_DIR=control, PATH="%s:%s" % (BIN, os.environ["PATH"]))
        tasks_file = Path(control) / "tasks.json"
        if task_cpu:
            env.update(ANSIBLE_CALLBACK_PLUGINS=str(ROOT / "bench" / "callbacks"),
                       ANSIBLE_CALLBACKS_ENABLED="qfc_task_cpu", QFC_BENCH_TASK_CPU=str(tasks_file))
        cpu0, own0, start = busy_cpu(), children_cpu(), time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=900)
        elapsed, cpu, own = time.perf_counter() - start, busy_cpu() - cpu0, children_cpu() - own0
        tasks = json.loads(tasks_file.read_text()) if task_cpu and tasks_file.exists() else None
        for socket in Path(control).iterdir():  # not timed: end the run's SSH masters rather than let them linger
            if socket == tasks_file:
                continue
            subprocess.run(["ssh", "-O", "exit", "-o", "ControlPath=%s" % socket, "fleet-node"], capture_output=True,
                           check=False, timeout=30)
    recap = {h: [int(c) for c in counts] for h, *counts in RECAP.findall(proc.stdout)}
    problems = []
    if proc.returncode != 0:
        problems.append("rc=%d" % proc.returncode)
    if sorted(recap) != sorted(hosts):
        problems.append("recap hosts %s" % sorted(recap))
    problems += ["%s unchanged or failed: ok/changed/unreachable/failed %s" % (h, c)
                 for h, c in recap.items() if c[1] == 0 or c[2] or c[3]]
    if proc.stdout.count(SUMMARY_TASK) != batches:
        problems.append("%d batches, expected %d" % (proc.stdout.count(SUMMARY_TASK), batches))
    if task_cpu and tasks is None:
        problems.append("no per-task CPU from bench/callbacks/qfc_task_cpu.py")
    if problems:
        raise SystemExit("%s\n-> %s\n%s" % (" ".join(cmd), "; ".join(problems), (proc.stdout + proc.stderr)[-4000:]))
    return elapsed, cpu, own, tasks


def ssh_key_exchange(inventory, host, samples=5):
    """(key exchange algorithm, controller CPU s of opening one new SSH connection, of one more command over it):
    what each host's first task pays before any module runs, measured with Ansible's own ssh options (ControlMaster,
    ControlPersist) against one server of the fleet. The first figure minus the second is the connection's cost."""
    hostvars = json.loads(Path(inventory).read_text())["all"]["children"]["qfieldcloud"]["hosts"][host]
    base = ["ssh", "-C", "-o", "ControlMaster=auto", "-o", "ControlPersist=60s", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-i", hostvars["ansible_ssh_private_key_file"],
            "-p", str(hostvars["ansible_port"]), "%s@%s" % (hostvars["ansible_user"], hostvars["ansible_host"])]
    # The algorithm from a connection of its own: -v on a ControlMaster run would keep the master's stderr open.
    proc = subprocess.run(base[:1] + ["-v", "-o", "ControlPath=none"] + base[1:] + ["true"], capture_output=True,
                          text=True, check=True, timeout=60)
    found = re.search(r"kex: algorithm: (\S+)", proc.stderr)
    algorithm = found.group(1) if found else "unknown"
    first, more = [], []
    for _sample in range(samples):
        with tempfile.TemporaryDirectory(prefix="qfc-kex-") as control:
            cmd = base[:1] + ["-o", "ControlPath=%s/cp" % control] + base[1:] + ["true"]
            for into in (first, more):  # no pipes: the backgrounded master would hold them open for 60 s
                cpu0 = children_cpu()
                subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               check=True, timeout=60)
                into.append(children_cpu() - cpu0)
            subprocess.run(["ssh", "-O", "exit", "-o", "ControlPath=%s/cp" % control, "fleet-node"],
                           capture_output=True, check=False, timeout=30)
    return algorithm, statistics.median(first), statistics.median(more)


def task_table(runs, hosts):
    """Median controller CPU per task over the runs that recorded it, in the order the tasks ran: Markdown rows."""
    order, values = [], {}
    for tasks in runs:
        for name, main, children in tasks:
            if name not in values:
                order.append(name)
                values[name] = []
            values[name].append(main + children)
    rows = []
    for name in order:
        med = statistics.median(values[name])
        label = re.sub(r"^qfieldcloud\.ops\.scale : ", "", name)
        rows.append("| %s | %.2f s | %.3f s |" % (label.replace("|", "/"), med, med / hosts))
    return rows


def check_nodes(fleet, hosts, replicas):
    """The servers really run the count: in their .env and as running worker_wrapper containers."""
    for host in hosts:
        node = fleet[host]
        value, running = node.env_value(), node.running()
        if value != str(replicas) or len(running) != replicas:
            raise SystemExit("%s: expected %d workers, .env says %s, running %s" % (host, replicas, value, running))


def kex_and_tasks(kex, big, big_runs):
    """The lines that say where the controller CPU of the big runs goes: SSH connections, then each task."""
    algorithm, first, more = kex
    lines = [wrap("Where the controller CPU goes. SSH: every run opens one new connection per host (key exchange `%s` "
                  "on this controller): %.3f s of CPU for the first command against %.3f s for one more over the open "
                  "connection, so about %.2f s per host before any task, %.0f%% of the %.2f s target per host. It "
                  "depends on the controller's OpenSSH, not on the collection: OpenSSH 9.0-9.8 default to "
                  "sntrup761x25519, whose key generation is slow; 9.9 and later to mlkem768x25519, which is fast."
                  % (algorithm, first, more, first - more, 100 * (first - more) / CPU_PER_HOST_TARGET,
                     CPU_PER_HOST_TARGET)), ""]
    recorded = [r[3] for r in big_runs if r[3]]
    if big and recorded:
        lines += ["Per task, %d servers, median of %d runs (bench/callbacks/qfc_task_cpu.py: the main process and the "
                  "children reaped during the task):" % (big, len(recorded)), "",
                  "| task | controller CPU | per host |", "|---|---|---|", *task_table(recorded, big), ""]
    return lines


def wrap(text):
    return textwrap.fill(text, 120, break_long_words=False, break_on_hyphens=False)


def medians(samples):
    return tuple(statistics.median(s[i] for s in samples) for i in range(3))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-servers", type=int, default=10,
                        help="after the rounds, scale this many servers in one batch (<= 3 or --big-runs 0: skip)")
    parser.add_argument("--big-runs", type=int, default=2, help="timed runs of the --max-servers case with --forks")
    parser.add_argument("--forks", type=int, default=0,
                        help="ansible-playbook --forks on every run (default: the larger of 10 and --max-servers)")
    parser.add_argument("--write", action="store_true", help="update docs/performance.md")
    opts = parser.parse_args()
    ensure_collection_link()
    big = opts.max_servers if opts.max_servers > 3 and opts.big_runs > 0 else 0
    cfg_forks, cfg_set = configured_forks()
    forks = opts.forks or max(10, big)
    servers = max(7, big)

    runs = {name: [] for name in CASES}
    big_runs, big_default = [], None
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="qfc-bench-fleet-"))
    with PgCluster() as pg:
        pg.schema_template()  # Fleet copies the newest recorded QFieldCloud schema from it
        fleet = Fleet(work / "fleet", {"host": pg.host, "port": pg.port, "user": pg.user, "password": pg.password},
                      servers=servers, workers=0, replicas=1)
        try:
            t0 = time.perf_counter()
            fleet.up()
            up_seconds = time.perf_counter() - t0
            inventory = fleet.write_inventory()
            cpu0 = busy_cpu()
            time.sleep(5)
            idle_load = (busy_cpu() - cpu0) / 5  # what the idle fleet (and anything else) keeps busy
            print("fleet of %d servers up in %.1f s; idle load %.2f cores; forks %d"
                  % (servers, up_seconds, idle_load, forks), flush=True)
            kex = ssh_key_exchange(inventory, fleet.servers[0].name)
            print("ssh: key exchange %s; a new connection %.3f s CPU, a command over it %.3f s" % kex, flush=True)
            replicas = 1
            for rnd in range(opts.rounds):
                replicas = 2 if rnd % 2 == 0 else 1  # up, down, up, ...: every case the same direction per round
                order = list(CASES) if rnd % 2 == 0 else list(reversed(CASES))
                for name in order:
                    hosts, serial, batches = CASES[name]
                    runs[name].append(run_scale(inventory, hosts, replicas, serial, batches, forks))
                    check_nodes(fleet, hosts, replicas)
                print("round %d (-> %d): %s" % (rnd + 1, replicas, ", ".join(
                    "%s %.2f s" % (n, runs[n][-1][0]) for n in order)), flush=True)
            if big:
                hosts = [n.name for n in fleet.servers][:big]
                behind = [h for h in hosts if fleet[h].env_value() != str(replicas)]
                if behind:  # not timed: the servers no case used join the others' count
                    run_scale(inventory, behind, replicas, "100%", 1, forks)
                    check_nodes(fleet, behind, replicas)
                for i in range(opts.big_runs + (1 if cfg_forks < big else 0)):
                    replicas = 3 - replicas
                    default = i == opts.big_runs  # the last one: the forks ansible.cfg gives
                    result = run_scale(inventory, hosts, replicas, "100%", 1, 0 if default else forks,
                                       task_cpu=not default)
                    check_nodes(fleet, hosts, replicas)
                    if default:
                        big_default = result
                    else:
                        big_runs.append(result)
                    print("%d servers, forks %d (-> %d): %.2f s"
                          % (big, cfg_forks if default else forks, replicas, result[0]), flush=True)
        finally:
            fleet.down()
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - started

    med = {name: medians(v) for name, v in runs.items()}
    t1, t3, tc = med[ONE][0], med[THREE][0], med[CANARY][0]
    ratio3 = t3 / t1
    slope = (t3 - t1) / 2  # seconds per extra server, all in one batch

    def project(n):
        return t1 + slope * (n - 1)

    cores = os.cpu_count()
    cpu_slope = (med[THREE][1] - med[ONE][1]) / 2  # machine CPU seconds per extra server

    def cpu_floor(n):
        return (med[ONE][1] + cpu_slope * (n - 1)) / cores

    compose = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True,
                             check=False).stdout.strip()
    ansible = subprocess.run([str(BIN / "ansible"), "--version"], capture_output=True, text=True,
                             check=False).stdout.split("\n")[0]
    ansible = re.sub(r"^ansible \[core (.*)\]$", r"ansible-core \1", ansible)

    def row(case, m, hosts, note=""):
        cells = (case, m[0], m[0] / t1, m[1], m[2], m[2] / hosts, note)
        return "| %s | %.2f s | %.2fx | %.1f s | %.1f s | %.2f s | %s |" % cells

    def cpu_verdict(m, hosts):
        per_host = m[2] / hosts
        return "controller CPU per host target <= %.2f s: **%s**" % (
            CPU_PER_HOST_TARGET, "PASS" if per_host <= CPU_PER_HOST_TARGET else "FAIL")

    rows = [
        row("one server, one batch (`qfc_serial: 100%`)", med[ONE], 1),
        row("three servers, one batch (`qfc_serial: 100%`)", med[THREE], 3,
            "target <= %.1fx: **%s**" % (TARGET, "PASS" if ratio3 <= TARGET else "FAIL")),
        row("three servers, default batches (canary, 25%, rest: 3 batches)", med[CANARY], 3,
            "the canary and batches cost %.2f s (%.2fx one batch)" % (tc - t3, tc / t3)),
        "| projection: ten servers, one batch, forks >= 10 | %.2f s | %.2fx | | | | t1 + %.2f s per extra server |"
        % (project(10), project(10) / t1, slope),
    ]
    if big:
        big_med = medians(big_runs)
        rows.append(row("measured: %d servers, one batch, forks %d (median of %d)" % (big, forks, len(big_runs)),
                        big_med, big, "%.2fx the projection of %.2f s; %s" % (
                            big_med[0] / project(big), project(big), cpu_verdict(big_med, big))))
        if big_default:
            rows.append(row("measured: %d servers, one batch, forks %d (%s, 1 run)"
                            % (big, cfg_forks, "ansible.cfg's" if cfg_set else "Ansible's default"),
                            big_default, big, "%.2fx forks %d" % (big_default[0] / big_med[0], forks)))
    raw = ["%s %s" % (name, ", ".join("%.2f" % x[0] for x in v)) for name, v in runs.items()]
    if big:
        walls, cpus = ", ".join("%.2f" % x[0] for x in big_runs), ", ".join("%.1f" % x[2] for x in big_runs)
        raw.append("%d servers %s (controller CPU %s)" % (big, walls, cpus))
        if big_default:
            raw.append("%d servers forks %d %.2f" % (big, cfg_forks, big_default[0]))
    table = "\n".join([
        MARK[0],
        "## Fleet: three servers in one batch against one",
        "",
        wrap("`bench/bench_fleet.py` scales servers of an SSH test fleet (`tests/support/fleet.py`: containers with "
             "their own sshd, compose project and database, reached over real SSH) with `playbooks/scale.yml`, every "
             "run a real change (1 -> 2 workers in one round, back in the next, the cases on disjoint servers), health "
             "gate included, fresh SSH connections per run. Target from the issue: three servers in one batch at most "
             "%.1fx one server, because the servers run in parallel." % TARGET),
        "",
        "Measured %s on %s, %d cores, Python %s, %s, Compose %s; median of %d rounds, case order reversed every "
        "round; `--forks %d` on every run (ansible.cfg %s). Idle fleet of %d servers: %.2f cores busy."
        % (time.strftime("%Y-%m-%d"), platform.machine(), cores, platform.python_version(), ansible, compose,
           opts.rounds, forks, ("sets forks %d" if cfg_set else "sets none: Ansible's default %d") % cfg_forks, servers,
           idle_load),
        "",
        "| case | median wall | ratio to one server | machine CPU | controller CPU | controller CPU per host | note |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        wrap("Machine CPU is every core's busy time during the run: the fleet's servers are containers on the same "
             "%d cores as the Ansible controller, so their work (sshd, the modules' Python, `docker compose`, the "
             "Docker Engine) competes with it. A run cannot be shorter than machine CPU / %d; on real servers each "
             "host's share runs on its own cores and only the controller CPU (ansible-playbook, its workers and ssh "
             "clients: the CPU time of its process tree) is shared. Before issue 11 (ping, includes, per-host summary "
             "tasks, no pipelining) it was %.2f s per host for 10 servers; the target is half of that."
             % (cores, cores, CPU_PER_HOST_BEFORE)),
        "",
        wrap("The linear projection assumes the servers' work overlaps freely; here it cannot once the cores are "
             "full. Machine CPU grows by %.1f s per extra server, so ten servers need about %.0f CPU seconds: at "
             "least %.1f s on %d cores. The larger of the two, %.1f s, is the projection for ten on this machine%s."
             % (cpu_slope, cpu_floor(10) * cores, cpu_floor(10), cores, max(project(10), cpu_floor(10)),
                "" if not big else " (measured %d: %.2f s)" % (big, medians(big_runs)[0]))),
        "",
        *kex_and_tasks(kex, big, big_runs),
        "Raw seconds: " + "; ".join(raw),
        MARK[1],
    ])
    print(table)
    print("benchmark run time %.0f s (fleet of %d up in %.0f s)" % (total, servers, up_seconds))
    if opts.write:
        write_section("bench_fleet", table)
    return 0 if ratio3 <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
