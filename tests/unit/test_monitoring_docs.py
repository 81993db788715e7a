"""Checks docs/monitoring: the Prometheus alerting rules and the Grafana dashboard.

With promtool (on PATH or /usr/local/bin; scripts/install-promtool.sh installs it) the rules are checked with
`promtool check rules`, unit-tested with `promtool test rules` on prometheus-rules.test.yml, and every dashboard
query is parsed by promtool too. Without it those tests are skipped, and the parse-and-schema checks below, which
always run, are what guards the files: YAML structure, metric names, `for:` durations, severities, annotations, the
collection's thresholds, and the dashboard's JSON, panel ids, queries and templated datasource.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _policy, _queue

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "docs" / "monitoring"
RULES = MONITORING / "prometheus-rules.yml"
RULE_TESTS = MONITORING / "prometheus-rules.test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
PROMTOOL_FALLBACK = Path("/usr/local/bin/promtool")

COLLECTOR = ROOT / "roles" / "monitoring" / "files" / "qfc_queue_collector.py"


def load_collector():
    spec = importlib.util.spec_from_file_location("qfc_queue_collector", COLLECTOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def collector_metrics():
    """The metric names the collector writes to qfieldcloud_queue.prom: its own prom_text on facts shaped by
    _queue.shape from a query answer where every figure is known (a metric whose value is unknown is left out of the
    textfile), so a metric added to the collector is in this set without anyone listing it."""
    answer = {"by_status": {"pending": 3, "queued": 1, "started": 2, "finished": 100, "failed": 5},
              "oldest_pending_age_s": 42.0, "useful_backlog": 2, "eligible_projects": 2,
              "oldest_eligible_age_s": 5.0, "busy_projects": 3, "locked_projects_waiting": 0, "stuck_stale": 1,
              "stuck_orphaned_queued": 1, "stuck_old_pending": 1, "last_hour_finished": 19, "last_hour_failed": 1,
              "duration_count": 20, "duration_avg_s": 10.0, "duration_p50_s": 9.0, "duration_p95_s": 30.0}
    facts = dict(_queue.shape(answer, 86400), worker_timeout_s=600, worker_timeout_source="env")
    workers = {"configured": 2, "running": 2, "busy": 1}
    text = load_collector().prom_text("qfieldcloud", facts, workers, True, 1764700000.0, 0.4)
    names = re.findall(r"^# TYPE (\S+) gauge$", text, re.M)
    samples = {line.split("{", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert set(names) == samples, "every sample has HELP and TYPE"
    return frozenset(names)


# What the collector writes to qfieldcloud_queue.prom: the only names the rules and the dashboard may query, and
# every one of them must be shown on the dashboard.
KNOWN_METRICS = collector_metrics()
SEVERITIES = frozenset({"warning", "critical"})


def policy_threshold(name, digits):
    """One of _policy's default thresholds, as the rules write it."""
    return "%.*f" % (digits, _policy.DEFAULT_THRESHOLDS[name])


# alert -> (severity, `for`, fragments its expr must hold): the collection's thresholds (_policy, docs/queue.md).
EXPECTED_ALERTS = {
    "QFieldCloudQueueDepthHigh": ("warning", "10m", ["qfieldcloud_queue_depth > " + policy_threshold(
        "queue_depth_warning", 0)]),
    "QFieldCloudWorkersIdleWithJobsWaiting": (
        "critical", "5m", ["qfieldcloud_useful_backlog > 0", "qfieldcloud_workers_busy < qfieldcloud_workers_running"]),
    "QFieldCloudJobFailureRateHigh": ("critical", "5m", ['result="failed"', "> " + policy_threshold(
        "failed_ratio_critical", 2), "> 0"]),
    "QFieldCloudStuckJobs": ("warning", None, ["qfieldcloud_stuck_jobs > 0"]),
    "QFieldCloudWorkersMissing": ("critical", "5m", ["qfieldcloud_workers_configured - qfieldcloud_workers_running"]),
    "QFieldCloudCollectorFailing": ("warning", "15m", ["qfieldcloud_collector_up == 0"]),
    "QFieldCloudCollectorStale": ("warning", None, ["qfieldcloud_collector_last_success_timestamp_seconds", "> 900"]),
    "QFieldCloudCollectorMetricsMissing": ("warning", "15m", ["qfieldcloud_collector_up"]),
}
# Alerts whose firing the promtool unit tests must show.
MUST_BE_UNIT_TESTED = ("QFieldCloudQueueDepthHigh", "QFieldCloudJobFailureRateHigh", "QFieldCloudWorkersMissing")

RULE_KEYS = frozenset({"alert", "expr", "for", "keep_firing_for", "labels", "annotations"})
GROUP_KEYS = frozenset({"name", "interval", "limit", "rules"})
DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")
DS_TEMPLATES = frozenset({"${DS_PROMETHEUS}", "$DS_PROMETHEUS"})

PROMQL_KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                             "offset", "bool", "inf", "nan"})
PROMQL_FUNCTIONS = frozenset({
    # aggregation operators
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
    # functions
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "day_of_month",
    "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp", "floor", "histogram_quantile", "hour",
    "idelta", "increase", "irate", "label_join", "label_replace", "ln", "log2", "log10", "minute", "month",
    "predict_linear", "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt", "time", "timestamp",
    "vector", "year", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
    "quantile_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time", "present_over_time",
})
LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
NUMBER = re.compile(r"(?<![A-Za-z0-9_:.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:ms|s|m|h|d|w|y)*(?![A-Za-z0-9_:])")
GRAFANA_VARIABLE = re.compile(r"\$(?:\{[^}]*\}|\w+)")
TEMPLATE_QUERY = re.compile(r'printf\s+"((?:[^"\\]|\\.)*)"')
LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?P<selector>.*?)\s*,\s*(?P<label>[A-Za-z_]\w*)\s*\)\s*$", re.S)


# --- helpers ------------------------------------------------------------------------------------------------------
def find_promtool():
    found = shutil.which("promtool")
    if found:
        return found
    if os.access(PROMTOOL_FALLBACK, os.X_OK):
        return str(PROMTOOL_FALLBACK)
    return None


PROMTOOL = find_promtool()
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not found on PATH or in /usr/local/bin (scripts/install-promtool.sh); "
                             "the parse-and-schema checks still run")


def run_promtool(*args, cwd=None):
    result = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)
    assert result.returncode == 0, "promtool %s failed:\n%s%s" % (" ".join(args), result.stdout, result.stderr)
    return result.stdout


def promql_names(expr):
    """(metric names, function names) an expression uses, by a lexical scan good enough for these files."""
    text = STRING.sub('""', expr)
    text = GRAFANA_VARIABLE.sub("", text)
    text = re.sub(r"\{[^{}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", "", text)  # ranges and subqueries
    text = LABEL_LIST.sub("", text)
    text = NUMBER.sub("", text)
    metrics, functions = set(), set()
    for match in IDENTIFIER.finditer(text):
        word = match.group(0)
        if word.lower() in PROMQL_KEYWORDS:
            continue
        if text[match.end():].lstrip().startswith("("):
            functions.add(word)
        else:
            metrics.add(word)
    return metrics, functions


def check_promql(expr, where):
    """Problems with an expression: unknown metrics or functions, none of ours, unbalanced brackets."""
    problems = []
    metrics, functions = promql_names(expr)
    if not metrics:
        problems.append("%s: no metric in %r" % (where, expr))
    if metrics - KNOWN_METRICS:
        problems.append("%s: unknown metrics %s in %r" % (where, sorted(metrics - KNOWN_METRICS), expr))
    if functions - PROMQL_FUNCTIONS:
        problems.append("%s: unknown functions %s in %r" % (where, sorted(functions - PROMQL_FUNCTIONS), expr))
    stripped = STRING.sub('""', expr)
    for opening, closing in ("()", "[]", "{}"):
        if stripped.count(opening) != stripped.count(closing):
            problems.append("%s: unbalanced %s%s in %r" % (where, opening, closing, expr))
    return problems


def load_rules():
    with RULES.open() as handle:
        return yaml.safe_load(handle)


def all_rules(document):
    return [rule for group in document["groups"] for rule in group["rules"]]


def reject_duplicate_keys(pairs):
    keys = [key for key, value in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError("duplicate keys %s" % duplicates)
    return dict(pairs)


def load_dashboard():
    with DASHBOARD.open() as handle:
        return json.load(handle, object_pairs_hook=reject_duplicate_keys)


def walk_panels(panels):
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))  # collapsed rows hold their panels


def dashboard_targets(dashboard):
    for panel in walk_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield panel, target


def variable_query(variable):
    query = variable.get("query")
    return query.get("query", "") if isinstance(query, dict) else query or ""


def walk_datasources(node, path="$"):
    """Every `datasource` value in the dashboard, with its JSON path."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield path + "." + key, value
            yield from walk_datasources(value, path + "." + key)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk_datasources(value, "%s[%d]" % (path, index))


def as_checkable_promql(expr):
    """A dashboard query as plain PromQL: Grafana's variables become match-anything regexes."""
    return GRAFANA_VARIABLE.sub(".*", expr)


# --- the lexical scan itself ------------------------------------------------------------------------------------
@pytest.mark.parametrize("expr, metrics, functions", [
    ("qfieldcloud_queue_depth > 10", {"qfieldcloud_queue_depth"}, set()),
    ('sum without (result) (qfieldcloud_jobs_last_hour{result="failed"}) / 2e1', {"qfieldcloud_jobs_last_hour"},
     {"sum"}),
    ("max_over_time(qfieldcloud_collector_up[1d]) unless on (instance) up offset 5m",
     {"qfieldcloud_collector_up", "up"}, {"max_over_time"}),
    ('time() - x{instance=~"$instance",project=~"${project}"}', {"x"}, {"time"}),
    ("sum(rate(node_cpu_seconds_total[5m])) by (instance)", {"node_cpu_seconds_total"}, {"sum", "rate"}),
])
def test_promql_scan(expr, metrics, functions):
    assert promql_names(expr) == (metrics, functions)


def test_promql_check_flags_unknown_metrics_and_functions():
    problems = check_promql("frobnicate(up) > 1", "x")
    assert any("unknown metrics ['up']" in p for p in problems)
    assert any("unknown functions ['frobnicate']" in p for p in problems)
    assert check_promql("qfieldcloud_queue_depth > 10", "x") == []


# --- Prometheus rules: parse-and-schema checks (always) -------------------------------------------------------
def test_rules_structure():
    document = load_rules()
    assert set(document) == {"groups"}
    assert [group["name"] for group in document["groups"]] == ["qfieldcloud"]
    for group in document["groups"]:
        assert set(group) <= GROUP_KEYS, sorted(set(group) - GROUP_KEYS)
        assert isinstance(group["rules"], list) and group["rules"]
    names = [rule.get("alert") for rule in all_rules(document)]
    assert all(names), "every rule is an alerting rule"
    assert len(names) == len(set(names)), "duplicate alert names"
    assert set(names) == set(EXPECTED_ALERTS)


@pytest.mark.parametrize("alert", sorted(EXPECTED_ALERTS))
def test_rule_schema(alert):
    rule = {r["alert"]: r for r in all_rules(load_rules())}[alert]
    severity, duration, fragments = EXPECTED_ALERTS[alert]
    assert set(rule) <= RULE_KEYS, sorted(set(rule) - RULE_KEYS)
    assert re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", alert)
    assert isinstance(rule["expr"], str) and rule["expr"].strip()
    assert check_promql(rule["expr"], alert) == []
    expr = " ".join(rule["expr"].split())
    for fragment in fragments:
        assert fragment in expr, "%s: %r not in %r" % (alert, fragment, expr)
    for key in ("for", "keep_firing_for"):
        if key in rule:
            assert DURATION.match(str(rule[key])), "%s: invalid %s %r" % (alert, key, rule[key])
    assert rule.get("for") == duration
    for range_ in re.findall(r"\[([^\]]*)\]", rule["expr"]):
        assert DURATION.match(range_.split(":")[0]), "%s: invalid range %r" % (alert, range_)
    labels = rule.get("labels", {})
    assert labels.get("severity") in SEVERITIES
    assert labels["severity"] == severity
    annotations = rule.get("annotations", {})
    assert {"summary", "description"} <= set(annotations)
    for key in ("summary", "description"):
        text = annotations[key]
        assert isinstance(text, str) and text.strip()
        assert "{{ $labels.instance }}" in text, "%s: %s does not name the instance" % (alert, key)
        assert text.count("{{") == text.count("}}"), "%s: unbalanced template in %s" % (alert, key)
    assert "$labels.project" in annotations["summary"]
    shown = annotations["summary"] + annotations["description"]
    if alert != "QFieldCloudCollectorMetricsMissing":  # the series is gone: there is no value to show
        assert "$value" in shown or "| query" in shown, "%s: no value shown" % alert
    for query in TEMPLATE_QUERY.findall(shown):  # {{ printf "promql" ... | query }} in the annotations
        assert check_promql(query.replace("%q", '""'), alert + " annotation") == []


def test_rule_unit_tests_cover_the_alerts():
    with RULE_TESTS.open() as handle:
        document = yaml.safe_load(handle)
    assert document["rule_files"] == [RULES.name]
    fired = set()
    tested = set()
    for case in document["tests"]:
        for series in case["input_series"]:
            name = series["series"].split("{", 1)[0]
            assert name in KNOWN_METRICS, "unknown metric %s in %s" % (name, RULE_TESTS.name)
        for check in case.get("alert_rule_test", []):
            assert check["alertname"] in EXPECTED_ALERTS, check["alertname"]
            assert DURATION.match(str(check["eval_time"]))
            tested.add(check["alertname"])
            if check.get("exp_alerts"):
                fired.add(check["alertname"])
                for expected in check["exp_alerts"]:
                    assert expected["exp_labels"]["severity"] == EXPECTED_ALERTS[check["alertname"]][0]
    assert set(MUST_BE_UNIT_TESTED) <= fired
    assert fired == set(EXPECTED_ALERTS), "alerts never shown firing: %s" % sorted(set(EXPECTED_ALERTS) - fired)
    assert tested == fired


# --- Prometheus rules: promtool ---------------------------------------------------------------------------------
@needs_promtool
def test_promtool_check_rules():
    out = run_promtool("check", "rules", str(RULES))
    assert "SUCCESS: %d rules found" % len(EXPECTED_ALERTS) in out


@needs_promtool
def test_promtool_test_rules():
    out = run_promtool("test", "rules", str(RULE_TESTS), cwd=str(MONITORING))
    assert "SUCCESS" in out


# --- Grafana dashboard --------------------------------------------------------------------------------------------
def test_dashboard_is_valid_json_with_unique_panel_ids():
    dashboard = load_dashboard()  # also rejects duplicate keys
    assert isinstance(dashboard.get("schemaVersion"), int) and dashboard["schemaVersion"] >= 36
    assert dashboard["title"] and dashboard["uid"]
    assert dashboard.get("id") is None, "an exported id clashes on import"
    panels = list(walk_panels(dashboard["panels"]))
    ids = [panel.get("id") for panel in panels]
    assert all(isinstance(i, int) for i in ids), ids
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in panels:
        assert panel.get("title"), panel["id"]
        if panel.get("type") != "row":
            assert panel.get("targets"), "panel %s has no query" % panel["id"]


def test_dashboard_panels_do_not_overlap():
    cells = {}
    for panel in walk_panels(load_dashboard()["panels"]):
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["id"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, "panels %s and %s overlap" % (cells[(x, y)], panel["id"])
                cells[(x, y)] = panel["id"]


def test_dashboard_queries_use_known_metrics_and_the_variables():
    dashboard = load_dashboard()
    used = set()
    problems = []
    for panel, target in dashboard_targets(dashboard):
        expr = target.get("expr", "")
        where = "panel %s (%s) %s" % (panel["id"], panel["title"], target.get("refId"))
        problems += check_promql(expr, where)
        for variable in ('instance=~"$instance"', 'project=~"$project"'):
            if variable not in expr:
                problems.append("%s: no %s filter in %r" % (where, variable, expr))
        used |= promql_names(expr)[0]
    assert problems == []
    assert used == KNOWN_METRICS, "metrics without a panel: %s" % sorted(KNOWN_METRICS - used)


def test_dashboard_datasource_is_templated():
    dashboard = load_dashboard()
    inputs = {item["name"]: item for item in dashboard.get("__inputs", [])}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    found = list(walk_datasources(dashboard))
    assert found
    for path, datasource in found:
        uid = datasource.get("uid") if isinstance(datasource, dict) else datasource
        assert uid in DS_TEMPLATES, "%s: hard-coded datasource %r" % (path, datasource)
        if isinstance(datasource, dict):
            assert datasource.get("type") == "prometheus", path
    panels = list(walk_panels(dashboard["panels"]))
    assert all("datasource" in panel for panel in panels)
    assert all("datasource" in target for panel, target in dashboard_targets(dashboard))


def test_dashboard_instance_and_project_variables():
    variables = {variable["name"]: variable for variable in load_dashboard()["templating"]["list"]}
    for name in ("instance", "project"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"]["uid"] in DS_TEMPLATES
        match = LABEL_VALUES.match(variable_query(variable))
        assert match, variable_query(variable)
        assert match.group("label") == name
        assert check_promql(match.group("selector"), "variable " + name) == []
    assert "$instance" in variable_query(variables["project"]), "project follows the chosen instances"


@needs_promtool
def test_dashboard_queries_parse_with_promtool(tmp_path):
    """Every dashboard and variable query, variables replaced by `.*`, checked by promtool as recording rules."""
    dashboard = load_dashboard()
    rules = [{"record": "dashboard:panel_%s_%s" % (panel["id"], target["refId"]),
              "expr": as_checkable_promql(target["expr"])} for panel, target in dashboard_targets(dashboard)]
    for variable in dashboard["templating"]["list"]:
        match = LABEL_VALUES.match(variable_query(variable)) if variable["type"] == "query" else None
        if match:
            rules.append({"record": "dashboard:variable_%s" % variable["name"],
                          "expr": as_checkable_promql(match.group("selector"))})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run_promtool("check", "rules", str(path))
    assert "SUCCESS: %d rules found" % len(rules) in out


def test_known_metrics_come_from_the_collector():
    """The set is the collector's output, not a list kept by hand: it holds the metrics known to exist, and a name
    the collector does not write is not in it."""
    assert {"qfieldcloud_queue_depth", "qfieldcloud_worker_timeout_seconds", "qfieldcloud_collector_up",
            "qfieldcloud_stuck_jobs", "qfieldcloud_jobs_last_hour"} <= KNOWN_METRICS
    assert len(KNOWN_METRICS) == 15
    assert "qfieldcloud_queue_length" not in KNOWN_METRICS


def test_the_readme_names_only_rules_files_that_exist():
    """Copy, `rule_files:` and promtool must name the same file: the one this folder ships."""
    text = (MONITORING / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"[\w.-]*rules[\w.-]*\.ya?ml", text))
    assert named, "the README names no rules file"
    missing = {name for name in named if not (MONITORING / name).is_file()}
    assert not missing, "docs/monitoring/README.md names rules files that do not exist: %s" % sorted(missing)
