"""`make demo NAME=...`: the README's first command, twice on one host under two names, without collisions."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo.sh"


def demo(*args, timeout=600):
    return subprocess.run(["bash", str(DEMO), *args], check=False, capture_output=True, text=True, timeout=timeout)


def running(project):
    out = subprocess.run(["docker", "ps", "-q", "--filter", "label=com.docker.compose.project=%s" % project,
                          "--filter", "label=com.docker.compose.service=worker_wrapper"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return len(out.split())


def test_two_named_demos_run_side_by_side_and_come_down_one_at_a_time():
    names = ("qfct-demo-a", "qfct-demo-b")
    try:
        first = demo("--name", names[0], "3")
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        second = demo("--name", names[1], "1")
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert "failed=0" in second.stdout and "project %s" % names[1] in second.stdout
        assert (running(names[0]), running(names[1])) == (3, 1)
        for name in names:
            env = (ROOT / ".state" / ("demo-" + name) / "qfieldcloud" / ".env").read_text()
            assert "COMPOSE_PROJECT_NAME=%s\n" % name in env
        down = demo("--name", names[0], "--down")
        assert down.returncode == 0, down.stderr
        assert (running(names[0]), running(names[1])) == (0, 1)
        assert not (ROOT / ".state" / ("demo-" + names[0])).exists()
        assert (ROOT / ".state" / ("demo-" + names[1]) / "qfieldcloud" / ".env").is_file()
    finally:
        for name in names:
            demo("--name", name, "--down")


def test_a_name_compose_would_rewrite_is_refused_before_anything_starts():
    proc = demo("--name", "Bad Name", "2", timeout=60)
    assert proc.returncode == 2
    assert "NAME must be a Compose project name" in proc.stderr
    assert not (ROOT / ".state" / "demo-Bad Name").exists()
