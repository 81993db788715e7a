"""Checks the AWX material: the survey specifications in awx/surveys and the execution environment definitions.

Every survey must be one AWX accepts (the checks of AWX's `JobTemplateSurveySpec._validate_spec_data`: field names,
question types, value types of default/min/max, choices, unique variables) and must only set variables the playbook
reads: an option of the role the playbook runs (its meta/argument_specs.yml) or a documented playbook-level variable,
with a survey type that yields the option's type and defaults that the option and the survey limits accept.
"""

import fnmatch
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SURVEYS = ROOT / "awx" / "surveys"
PLAYBOOKS = ROOT / "playbooks"
ROLES = ROOT / "roles"
COLLECTION_PREFIX = "qfieldcloud.ops."

# Survey file -> the playbook it drives.
SURVEY_PLAYBOOKS = {
    "scale.json": "scale.yml",
    "cleanup.json": "cleanup.yml",
    "monitoring.json": "monitoring.yml",
    "queue_report.json": "queue_report.yml",
    "autoscale.json": "autoscale.yml",
    "autoscale_per_host.json": "autoscale.yml",
    "operations_report.json": "operations_report.yml",
}
# Variables a playbook reads itself (not through a role's argument spec), with the type the playbook expects.
PLAYBOOK_VARIABLES = {
    "scale.yml": {"qfc_target_hosts": "str", "qfc_serial": "raw", "qfc_max_fail_percentage": "int"},
    "cleanup.yml": {"qfc_target_hosts": "str"},
    "monitoring.yml": {"qfc_target_hosts": "str"},
    "queue_report.yml": {"qfc_target_hosts": "str", "qfc_project_src": "path"},
    "autoscale.yml": {"qfc_target_hosts": "str", "qfc_serial": "raw", "qfc_max_fail_percentage": "int"},
    "operations_report.yml": {"qfc_target_hosts": "str", "qfc_operations_limit": "int"},
}
# AWX's question types and the Python type of their `default` (JobTemplateSurveySpec.ALLOWED_TYPES).
QUESTION_TYPES = {
    "text": str,
    "textarea": str,
    "password": str,
    "integer": int,
    "float": (float, int),
    "multiplechoice": str,
    "multiselect": str,
}
TOP_FIELDS = {"name", "description", "spec"}
REQUIRED_QUESTION_FIELDS = {"question_name", "type", "variable", "required"}
QUESTION_FIELDS = REQUIRED_QUESTION_FIELDS | {
    "question_description", "min", "max", "default", "choices", "new_question",
}
# Survey type -> argument spec types it may feed. Text answers are strings; multiple choice is a string that the
# roles cast (`| bool`) when the option is a bool; multiselect answers are lists.
COMPATIBLE = {
    "text": {"str", "path", "raw"},
    "textarea": {"str", "path", "raw"},
    "password": {"str", "raw"},
    "integer": {"int", "float", "raw"},
    "float": {"float", "raw"},
    "multiplechoice": {"str", "bool", "raw"},
    "multiselect": {"list"},
}
BOOL_CHOICES = {"true", "false"}


def load_yaml(path):
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def survey_files():
    return sorted(SURVEYS.glob("*.json"))


def load_survey(name):
    return json.loads((SURVEYS / name).read_text(encoding="utf-8"))


def choice_list(choices):
    """AWX accepts choices as a list or as a newline-separated string."""
    if isinstance(choices, str):
        return [line for line in choices.splitlines() if line.strip()]
    return list(choices)


def playbook_roles(playbook):
    """Role names (without the collection prefix) of every play in the playbook."""
    names = []
    for play in load_yaml(PLAYBOOKS / playbook):
        for entry in play.get("roles", []):
            role = entry["role"] if isinstance(entry, dict) else entry
            names.append(role.removeprefix(COLLECTION_PREFIX))
    return names


def declared_options(playbook):
    """variable -> argument spec option, for the roles the playbook runs, plus its playbook-level variables."""
    options = {name: {"type": kind} for name, kind in PLAYBOOK_VARIABLES[playbook].items()}
    for role in playbook_roles(playbook):
        spec = load_yaml(ROLES / role / "meta" / "argument_specs.yml")
        options.update(spec["argument_specs"]["main"]["options"])
    return options


def question_ids(survey_name):
    return [q["variable"] for q in load_survey(survey_name)["spec"]]


def test_every_survey_has_a_playbook():
    assert sorted(p.name for p in survey_files()) == sorted(SURVEY_PLAYBOOKS)
    for playbook in SURVEY_PLAYBOOKS.values():
        assert (PLAYBOOKS / playbook).is_file()


@pytest.mark.parametrize("survey_name", sorted(SURVEY_PLAYBOOKS))
def test_survey_is_valid_awx_spec(survey_name):
    survey = load_survey(survey_name)
    assert set(survey) == TOP_FIELDS
    assert isinstance(survey["name"], str) and survey["name"]
    assert isinstance(survey["description"], str)
    assert isinstance(survey["spec"], list) and survey["spec"], "AWX refuses an empty spec"
    variables = [q.get("variable") for q in survey["spec"]]
    assert len(variables) == len(set(variables)), f"duplicate variables in {survey_name}"
    for question in survey["spec"]:
        where = f"{survey_name}:{question.get('variable')}"
        assert isinstance(question, dict), where
        assert REQUIRED_QUESTION_FIELDS <= set(question), where
        assert set(question) <= QUESTION_FIELDS, f"{where}: unknown fields {set(question) - QUESTION_FIELDS}"
        for field in ("question_name", "variable", "type"):
            assert isinstance(question[field], str) and question[field], where
        assert isinstance(question.get("question_description", ""), str), where
        assert isinstance(question["required"], bool), where
        qtype = question["type"]
        assert qtype in QUESTION_TYPES, where
        for limit in ("min", "max"):
            value = question.get(limit)
            assert value is None or (isinstance(value, int) and not isinstance(value, bool)), where
        if question.get("min") is not None and question.get("max") is not None:
            assert question["min"] <= question["max"], where
        default = question.get("default", "")
        if default != "":
            assert isinstance(default, QUESTION_TYPES[qtype]) and not isinstance(default, bool), where
        if qtype in ("multiplechoice", "multiselect"):
            assert "choices" in question, f"{where}: AWX requires choices"
            assert isinstance(question["choices"], list), f"{where}: choices are lists, as AWX's UI saves them"
            choices = choice_list(question["choices"])
            assert choices and len(choices) == len(set(choices)), where
            defaults = choice_list(default) if default != "" else []
            assert set(defaults) <= set(choices), f"{where}: default not among the choices"
            if qtype == "multiplechoice":
                assert len(defaults) <= 1, f"{where}: single select has one default"
        else:
            assert "choices" not in question, where


@pytest.mark.parametrize(
    ("survey_name", "variable"),
    [(name, variable) for name in sorted(SURVEY_PLAYBOOKS) for variable in question_ids(name)],
)
def test_survey_variable_matches_playbook(survey_name, variable):
    playbook = SURVEY_PLAYBOOKS[survey_name]
    options = declared_options(playbook)
    assert variable in options, f"{variable} is neither a role option nor a playbook variable of {playbook}"
    option = options[variable]
    question = next(q for q in load_survey(survey_name)["spec"] if q["variable"] == variable)
    qtype = question["type"]
    kind = option.get("type", "str")
    assert kind in COMPATIBLE[qtype], f"{variable}: survey type {qtype} cannot feed a {kind} option"
    default = question.get("default", "")
    low, high = question.get("min"), question.get("max")

    if qtype == "multiselect":
        assert option.get("elements", "str") == "str", variable
        assert "choices" in option, f"{variable}: multiselect needs an option with choices"
        assert set(question["choices"]) <= set(option["choices"]), variable
        if "default" in option:
            assert choice_list(default) == option["default"], f"{variable}: survey and role defaults differ"
    elif qtype == "multiplechoice":
        allowed = BOOL_CHOICES if kind == "bool" else set(option.get("choices", question["choices"]))
        assert set(question["choices"]) <= allowed, variable
        if "default" in option:
            expected = str(option["default"]).lower() if kind == "bool" else option["default"]
            assert default == expected, f"{variable}: survey and role defaults differ"
    elif qtype in ("integer", "float"):
        assert low is not None and low >= 0, f"{variable}: counts and durations are never negative"
        if "default" in question:
            assert low <= default <= (high if high is not None else default), f"{variable}: default outside min/max"
        else:
            assert question["required"], f"{variable}: an optional number needs a default"
        if "default" in option:
            assert default == option["default"], f"{variable}: survey and role defaults differ"
    else:  # text: min/max are lengths
        if "default" in question:
            assert low is None or low <= len(default), variable
            assert high is None or len(default) <= high, variable
        if question["required"]:
            assert low is not None and low >= 1, f"{variable}: a required text answer cannot be empty"
        if "default" in option:
            assert default == option["default"], f"{variable}: survey and role defaults differ"
    if option.get("required"):
        assert question["required"], f"{variable} is required by the role"


def test_scale_survey_is_the_issue_one():
    questions = {q["variable"]: q for q in load_survey("scale.json")["spec"]}
    replicas = questions["qfc_worker_replicas"]
    # text, not integer: the answer may be `auto`; the role checks it is an integer or auto
    assert replicas["type"] == "text" and replicas["min"] >= 1 and replicas["required"]
    assert "default" not in replicas, "the operator states the count on every launch"
    assert questions["qfc_target_hosts"]["type"] == "text"
    assert questions["qfc_target_hosts"].get("default", "") == "", "empty lets the playbook add qfc_worker_nodes"


def test_scale_survey_batches_default_to_the_playbook():
    questions = {q["variable"]: q for q in load_survey("scale.json")["spec"]}
    play_vars = load_yaml(PLAYBOOKS / "scale.yml")[0]["vars"]
    serial = questions["qfc_serial"]
    assert serial["type"] == "text"
    assert serial["default"].split(",") == [str(v) for v in play_vars["qfc_serial"]]
    failing = questions["qfc_max_fail_percentage"]
    assert failing["type"] == "integer" and (failing["min"], failing["max"]) == (0, 100)
    assert failing["default"] == play_vars["qfc_max_fail_percentage"]


@pytest.mark.parametrize("survey_name", ["autoscale.json", "autoscale_per_host.json"])
def test_autoscale_surveys_batch_like_the_playbook_and_offer_a_dry_run(survey_name):
    questions = {q["variable"]: q for q in load_survey(survey_name)["spec"]}
    play_vars = load_yaml(PLAYBOOKS / "autoscale.yml")[0]["vars"]
    assert questions["qfc_serial"]["default"].split(",") == [str(v) for v in play_vars["qfc_serial"]]
    assert questions["qfc_max_fail_percentage"]["default"] == play_vars["qfc_max_fail_percentage"]
    dry_run = questions["qfc_autoscale_dry_run"]
    assert dry_run["type"] == "multiplechoice" and dry_run["default"] == "false"
    # a scheduled launch sends no answers: every question has a default, so the schedule runs unattended
    assert all("default" in q for q in questions.values())


def test_autoscale_per_host_survey_leaves_the_inventory_bounds_alone():
    """Survey answers are extra vars, which beat inventory host vars: the per-host template asks for no bound, timing
    or cooldown, while the fleet-wide one asks for the bounds and the cooldown (the issue's survey)."""
    spec = load_yaml(ROLES / "autoscale" / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    per_host = {name for name in spec if name.startswith("qfc_autoscale_")} - {"qfc_autoscale_dry_run"}
    assert per_host >= {"qfc_autoscale_min_replicas", "qfc_autoscale_max_replicas", "qfc_autoscale_up_after",
                        "qfc_autoscale_down_after", "qfc_autoscale_cooldown", "qfc_autoscale_max_step_up",
                        "qfc_autoscale_max_step_down"}
    assert not per_host & set(question_ids("autoscale_per_host.json"))
    assert {"qfc_autoscale_min_replicas", "qfc_autoscale_max_replicas",
            "qfc_autoscale_cooldown"} <= set(question_ids("autoscale.json"))


def test_cleanup_survey_modes():
    questions = {q["variable"]: q for q in load_survey("cleanup.json")["spec"]}
    modes = questions["qfc_cleanup_modes"]
    assert modes["type"] == "multiselect"
    assert modes["choices"] == ["stale", "orphaned_queued", "age"]
    assert questions["qfc_cleanup_age_older_than"]["type"] == "text"


def test_no_survey_overrides_per_host_inventory_paths():
    # Extra vars beat inventory host vars: a survey answer for qfc_project_src would replace every host's checkout
    # path, so only the queue report (which has no role and documents it) may ask for it.
    for name in SURVEY_PLAYBOOKS:
        if name != "queue_report.json":
            assert "qfc_project_src" not in question_ids(name), name


def test_execution_environment_definition():
    definition = load_yaml(ROOT / "execution-environment.yml")
    assert definition["version"] == 3
    assert definition["images"]["base_image"]["name"]
    deps = definition["dependencies"]
    assert deps["ansible_core"]["package_pip"].startswith("ansible-core")
    assert deps["ansible_runner"]["package_pip"].startswith("ansible-runner")
    for key in ("galaxy", "python", "system"):
        assert isinstance(deps[key], str) and (ROOT / deps[key]).is_file(), key
    assert deps["python"] == "meta/ee-requirements.txt"
    assert deps["system"] == "meta/ee-bindep.txt"
    # The EE's ansible-core range is the one the collection is tested with (requirements-dev.txt).
    dev = (ROOT / "requirements-dev.txt").read_text(encoding="utf-8").splitlines()
    core = next(line.split("#")[0].strip() for line in dev if line.startswith("ansible-core"))
    assert deps["ansible_core"]["package_pip"].replace(" ", "") == core.replace(" ", "")
    # The collection is the tarball `make ee` builds from this checkout, copied into the context and installed from
    # /build (the galaxy stage's WORKDIR): no git tag or Galaxy account that may not exist.
    galaxy = load_yaml(ROOT / deps["galaxy"])
    assert galaxy["collections"] == [{"name": "collections/qfieldcloud-ops.tar.gz", "type": "file"}]
    assert definition["additional_build_files"] == [{"src": "dist/qfieldcloud-ops.tar.gz", "dest": "collections"}]


def test_collection_ee_metadata():
    meta = load_yaml(ROOT / "meta" / "execution-environment.yml")
    assert meta["version"] == 1
    assert set(meta["dependencies"]) == {"python", "system"}
    for path in meta["dependencies"].values():
        assert (ROOT / path).is_file(), path
    build_ignore = load_yaml(ROOT / "galaxy.yml").get("build_ignore", [])
    for path in ["meta/execution-environment.yml", *meta["dependencies"].values()]:
        # ansible-galaxy matches each relative path, and each directory on the way, with fnmatch
        parts = Path(path).parts
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        assert not any(fnmatch.fnmatch(p, pattern) for p in prefixes for pattern in build_ignore), \
            f"{path} must ship in the built collection"
    requirements = [
        line.split("#")[0].strip()
        for line in (ROOT / "meta" / "ee-requirements.txt").read_text(encoding="utf-8").splitlines()
    ]
    packages = {line.split(">")[0].split("=")[0].split("<")[0] for line in requirements if line}
    assert packages <= {"docker", "psycopg2-binary"}, packages


# --- launches: AWX's rules for a launch (awx/main/models/mixins.py, SurveyJobTemplateMixin) --------------------------
def awx_element_errors(question, data):
    """AWX's ``_survey_element_validation`` for the question types our surveys use (password placeholders aside)."""
    var = question["variable"]
    if var not in data:
        return ["'%s' value missing" % var] if question["required"] else []
    value, qtype = data[var], question["type"]
    low, high = question.get("min"), question.get("max")
    if qtype in ("text", "textarea", "password"):
        if not isinstance(value, str):
            return ["Value %s for '%s' expected to be a string." % (value, var)]
        return (["'%s' too short" % var] if low not in ("", None) and len(value) < int(low) else []) + \
            (["'%s' too long" % var] if high not in ("", None) and len(value) > int(high) else [])
    if qtype == "integer":
        if isinstance(value, bool) or not isinstance(value, int):  # AWX: type(value) != int
            return ["Value %s for '%s' expected to be an integer." % (value, var)]
        return (["'%s' too small" % var] if low not in ("", None) and value < int(low) else []) + \
            (["'%s' too large" % var] if high not in ("", None) and value > int(high) else [])
    if qtype == "float":
        if isinstance(value, bool) or not isinstance(value, (float, int)):
            return ["Value %s for '%s' expected to be a numeric type." % (value, var)]
        return []
    choices = choice_list(question.get("choices", []))
    if qtype == "multiselect":
        if not isinstance(value, list):
            return ["'%s' value is expected to be a list." % var]
        return ["Value %s for '%s' expected to be one of %s." % (v, var, choices) for v in value if v not in choices]
    if qtype == "multiplechoice":
        return [] if value in choices else ["Value %s for '%s' expected to be one of %s." % (value, var, choices)]
    raise AssertionError("question type %s not modelled" % qtype)


def awx_launch(survey, answers):
    """(extra_vars, errors) of a launch: survey defaults that pass validation (``_update_unified_job_kwargs``), then
    the launch's own answers, then every question validated against the result (``variables_needed_to_start``)."""
    extra_vars = {}
    for question in survey["spec"]:
        default = question.get("default")
        if default is not None and not awx_element_errors(question, {question["variable"]: default}):
            extra_vars[question["variable"]] = default
    extra_vars.update(answers)
    errors = [e for question in survey["spec"] for e in awx_element_errors(question, extra_vars)]
    return extra_vars, errors


# Questions a launch must answer (required, no default), with a sample answer.
MUST_ANSWER = {"scale.json": {"qfc_worker_replicas": "4"}}


def ui_answers(survey):
    """What the AWX UI sends when the user accepts every default: a multiselect default is one choice per line."""
    answers = {}
    for question in survey["spec"]:
        default = question.get("default")
        if default is None or (default == "" and not question["required"]):
            continue
        answers[question["variable"]] = choice_list(default) if question["type"] == "multiselect" else default
    return answers


def test_awx_launch_model_rejects_a_required_multiselect_with_a_string_default():
    """The model reproduces the reported failure: AWX cannot apply a multiselect default to a launch without answers."""
    question = {"variable": "modes", "type": "multiselect", "required": True, "default": "a\nb", "choices": ["a", "b"]}
    _vars, errors = awx_launch({"spec": [question]}, {})
    assert errors == ["'modes' value missing"]
    assert awx_launch({"spec": [question]}, {"modes": ["a"]})[1] == []
    assert awx_launch({"spec": [question]}, {"modes": "a"})[1] == ["'modes' value is expected to be a list."]


@pytest.mark.parametrize("survey_name", sorted(SURVEY_PLAYBOOKS))
def test_survey_launches_without_answers(survey_name):
    """API launches, awx.awx.job_launch and schedules send no answers: the survey's defaults must carry the launch."""
    survey = load_survey(survey_name)
    extra_vars, errors = awx_launch(survey, {})
    # Only a question with no default may be missing, on purpose: scale's worker count must be named at each launch.
    assert errors == ["'%s' value missing" % v for v in MUST_ANSWER.get(survey_name, {})], errors
    extra_vars, errors = awx_launch(survey, MUST_ANSWER.get(survey_name, {}))
    assert errors == [], errors
    for question in survey["spec"]:
        if question["type"] == "multiselect":
            assert question["variable"] not in extra_vars or isinstance(extra_vars[question["variable"]], list)


@pytest.mark.parametrize("survey_name", sorted(SURVEY_PLAYBOOKS))
def test_survey_launches_with_the_ui_defaults(survey_name):
    survey = load_survey(survey_name)
    extra_vars, errors = awx_launch(survey, dict(ui_answers(survey), **MUST_ANSWER.get(survey_name, {})))
    assert errors == [], errors
    for question in survey["spec"]:
        if question["type"] == "multiselect" and question.get("default"):
            assert extra_vars[question["variable"]] == choice_list(question["default"])


def test_cleanup_modes_left_out_of_a_launch_fall_back_to_the_role_default():
    """Where AWX leaves the multiselect out, the role's default is the survey's default: the same two modes."""
    survey = load_survey("cleanup.json")
    modes = {q["variable"]: q for q in survey["spec"]}["qfc_cleanup_modes"]
    defaults = load_yaml(ROLES / "job_cleanup" / "defaults" / "main.yml")
    assert "qfc_cleanup_modes" not in awx_launch(survey, {})[0]
    assert choice_list(modes["default"]) == defaults["qfc_cleanup_modes"]


# --- privilege escalation -------------------------------------------------------------------------------------------
# Playbooks that act on the QFieldCloud hosts need root there (.env, the Docker socket, /opt, /etc/cron.d): become,
# overridable with qfc_become. The capacity report runs its module on the controller and reads a world-readable log.
# operations_report.yml reads the operations log on each host (root's, mode 0640).
BECOME_PLAYBOOKS = {"scale.yml", "cleanup.yml", "monitoring.yml", "queue_report.yml", "autoscale.yml",
                    "operations_report.yml"}


@pytest.mark.parametrize("playbook", sorted(p.name for p in PLAYBOOKS.glob("*.yml")))
def test_become_is_set_where_the_playbook_needs_it_and_overridable(playbook):
    plays = load_yaml(PLAYBOOKS / playbook)
    for play in plays:
        if playbook in BECOME_PLAYBOOKS:
            assert play.get("become") == "{{ qfc_become | default(true) }}", playbook
        else:
            assert "become" not in play, "%s escalates on the controller, where it needs no root" % playbook
