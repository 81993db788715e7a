"""The job_cleanup role's scheduled command as code: it imports what the role copies beside it, its defaults are
the module's, and its summary lines, configuration checks and masking (tests/integration/test_cleanup_schedule.py
runs it for real)."""

from __future__ import annotations

import fcntl
import json
import re
import time
from pathlib import Path

import pytest
import yaml

from tests.support import host_programs
from tests.support.argspecs import argument_spec

ROOT = Path(__file__).resolve().parents[2]
COMMAND = ROOT / "roles" / "job_cleanup" / "files" / "qfc_job_cleanup_scheduled.py"


@pytest.fixture(scope="module")
def cli():
    return host_programs.load(COMMAND, "qfc_job_cleanup_scheduled")


def test_the_role_copies_exactly_what_the_command_imports():
    needed = host_programs.module_utils_closure(COMMAND)
    copied = yaml.safe_load((ROOT / "roles/job_cleanup/vars/main.yml").read_text())["_qfc_cleanup_module_utils"]
    assert sorted(copied) == sorted(name + ".py" for name in needed)
    assert {"_cleanup", "_postgres", "_jobs", "_envfile"} <= needed


def test_the_command_defaults_are_the_modules(cli):
    """Every option of qfc_job_cleanup, with the default its main() gives AnsibleModule (read by running main() up
    to AnsibleModule, as ansible-test's validate-modules does)."""
    spec = argument_spec("qfc_job_cleanup")
    assert cli.default_params() == {name: option.get("default") for name, option in spec.items()}
    assert set(cli.MODULE_DEFAULTS) | {"login_host"} <= set(spec)


def test_the_config_template_names_only_options_the_command_takes(cli):
    text = (ROOT / "roles/job_cleanup/templates/cleanup.json.j2").read_text()
    params = text.split('"params": {', 1)[1]
    names = set(re.findall(r'^\s*"([a-z_]+)":', params, flags=re.M))
    assert names and names <= set(cli.default_params()) | {"login_password_file"}
    assert "login_password" not in names  # the password lives in its own file


def config(tmp_path, **changes):
    data = {"modes": ["stale", "orphaned_queued"], "timeout": 60, "lock_file": str(tmp_path / "var" / "lock"),
            "older_than": {"orphaned_queued": "30m", "age": ""},
            "params": {"project_src": "/opt/qfieldcloud", "batch_size": 100, "worker_timeout_s": None,
                       "login_host": None}}
    data.update(changes)
    path = tmp_path / "cleanup.json"
    path.write_text(json.dumps(data))
    return path


def test_mode_params_are_the_modules_options(cli, tmp_path):
    password = tmp_path / "db.password"
    password.write_text("s3cret-pass\n")
    path = config(tmp_path)
    data = json.loads(path.read_text())
    data["params"]["login_password_file"] = str(password)
    path.write_text(json.dumps(data))
    loaded = cli.read_config(str(path))
    stale, orphaned = cli.mode_params(loaded, "stale"), cli.mode_params(loaded, "orphaned_queued")
    assert (stale["mode"], stale["older_than"], orphaned["mode"], orphaned["older_than"]) == (
        "stale", None, "orphaned_queued", "30m")
    assert stale["batch_size"] == 100 and stale["lock_timeout"] == 1000 and stale["connect_timeout"] == 10
    assert stale["login_password"] == "s3cret-pass" and stale["login_host"] is None
    assert "login_password_file" not in stale


@pytest.mark.parametrize("changes, message", [
    ({"modes": []}, "modes must be a non-empty list"),
    ({"modes": ["sometimes"]}, "modes must be a non-empty list"),
    ({"timeout": 0}, "timeout must be 1 to 86400"),
    ({"timeout": True}, "timeout must be 1 to 86400"),
    ({"params": {"mode": "age"}}, "unknown or per-mode options"),
    ({"params": {"bogus": 1}}, "unknown or per-mode options in params: bogus"),
])
def test_a_bad_configuration_is_refused(cli, tmp_path, capsys, changes, message):
    assert cli.main(["--config", str(config(tmp_path, **changes))]) == cli.EXIT_FAILED
    assert message in capsys.readouterr().err


def test_summary_lines(cli):
    result = {"count": 12, "jobs": [{"id": "job-%02d" % i} for i in range(12)], "threshold_s": 610,
              "worker_timeout_s": 600, "worker_timeout_source": "env",
              "left_alone": {"running_container": 0, "changed_meanwhile": 1, "locked_deltas": 0}}
    line = cli.summary("stale", result, False)
    assert line.startswith("stale: 12 jobs failed (threshold 610s, worker timeout 600s from env), left alone: "
                           "changed_meanwhile 1: job-00, job-01")
    assert line.endswith("job-09 and 2 more")
    one = dict(result, count=1, jobs=[{"id": "a"}], left_alone={})
    assert cli.summary("age", one, True) == ("age: 1 job would be failed (check) (threshold 610s, worker timeout "
                                             "600s from env): a")
    assert cli.summary("stale", {"failed": True, "msg": "Cannot connect. "}, False) == "stale: FAILED: Cannot connect."


def test_a_failure_never_prints_the_password_or_an_env_secret(cli, tmp_path, capsys, monkeypatch):
    logged = []
    monkeypatch.setattr(cli.syslog, "openlog", lambda ident, *args: logged.append(("openlog", ident)))
    monkeypatch.setattr(cli.syslog, "syslog", lambda priority, message: logged.append((priority, message)))
    env = tmp_path / ".env"
    env.write_text("POSTGRES_USER=u\nPOSTGRES_PASSWORD=env-s3cret-value\nPOSTGRES_DB=d\nPOSTGRES_HOST=127.0.0.1\n"
                   "POSTGRES_PORT=1\nPOSTGRES_SSLMODE=disable\n")
    path = config(tmp_path, params={"project_src": str(tmp_path), "connect_timeout": 1})
    assert cli.main(["--config", str(path), "--check"]) == cli.EXIT_FAILED
    captured = capsys.readouterr()
    assert "stale: FAILED: Cannot connect to PostgreSQL at u@127.0.0.1:1/d" in captured.err
    assert "orphaned_queued: FAILED" in captured.err  # the second mode still ran
    assert "env-s3cret-value" not in captured.out + captured.err
    # the same lines in syslog, tagged qfc-job-cleanup, at error level
    assert ("openlog", "qfc-job-cleanup") in logged
    messages = [m for p, m in logged if p == cli.syslog.LOG_ERR]
    assert [m.split(":")[0] for m in messages] == ["stale", "orphaned_queued"]
    assert all("env-s3cret-value" not in m for _p, m in logged)
    params = dict(cli.default_params(), login_password='pw"with\\quotes')
    secrets = cli.secrets_of(params, cli.Params(params, True))
    assert 'pw"with\\quotes' in secrets and 'pw\\"with\\\\quotes' in secrets


def test_a_held_lock_ends_the_run_at_once(cli, tmp_path, capsys):
    path = config(tmp_path)
    (tmp_path / "var").mkdir()
    with open(tmp_path / "var" / "lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        assert cli.main(["--config", str(path)]) == cli.EXIT_LOCKED
    assert "another run (pid 4242) holds the lock" in capsys.readouterr().err


def test_the_backstop_ends_a_run_that_the_database_deadline_did_not(cli, tmp_path, capsys, monkeypatch):
    """A call that hangs where no client-side deadline reaches it (here: any call) is ended by SIGALRM shortly
    after the run's timeout; the modes not reached are named."""
    monkeypatch.setattr(cli, "GRACE_S", 0.2)
    monkeypatch.setattr(cli, "run_mode", lambda *args: time.sleep(30))
    started = time.monotonic()
    assert cli.main(["--config", str(config(tmp_path, timeout=1))]) == cli.EXIT_TIMEOUT
    assert time.monotonic() - started < 5
    assert ("out of time: the run took longer than its timeout of 1s: stale interrupted; orphaned_queued not run"
            in capsys.readouterr().err)


def test_an_unexpected_error_in_one_mode_does_not_stop_the_next(cli, tmp_path, capsys, monkeypatch):
    seen = []

    def run_mode(params, check_mode, run, module=None):
        seen.append(params["mode"])
        if params["mode"] == "stale":
            raise KeyError("boom")
        return {"count": 0, "jobs": [], "threshold_s": 610, "worker_timeout_s": 600,
                "worker_timeout_source": "default", "left_alone": {}}, cli.Params(params, check_mode)

    monkeypatch.setattr(cli, "run_mode", run_mode)
    assert cli.main(["--config", str(config(tmp_path))]) == cli.EXIT_FAILED
    captured = capsys.readouterr()
    assert seen == ["stale", "orphaned_queued"]
    assert "stale: FAILED: unexpected KeyError: 'boom'" in captured.err
    assert "orphaned_queued: 0 jobs failed (threshold 610s, worker timeout 600s from default)" in captured.out
