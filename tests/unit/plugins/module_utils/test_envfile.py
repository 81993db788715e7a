"""The .env reader and editor: pure functions, every other byte preserved."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils._envfile import (
    MASK, EnvFileError, go_quoted, is_secret_key, lookup, mask, parse, secret_values, set_value)

UPSTREAM_LIKE = """# number of parallel workers
# DEFAULT: 1
QFIELDCLOUD_WORKER_REPLICAS=1

POSTGRES_PASSWORD=3shJDd2r7Twwkehb
COMPOSE_FILE=docker-compose.yml:docker-compose.override.local.yml
"""


def values(text):
    return {e.key: e.value for e in parse(text)}


def test_parses_upstream_layout():
    assert values(UPSTREAM_LIKE) == {"QFIELDCLOUD_WORKER_REPLICAS": "1", "POSTGRES_PASSWORD": "3shJDd2r7Twwkehb",
                                     "COMPOSE_FILE": "docker-compose.yml:docker-compose.override.local.yml"}


@pytest.mark.parametrize("line, value", [
    ("A=1", "1"),
    ("A = 1", "1"),
    ("export A=1", "1"),
    ("  A=1   ", "1"),
    ("A=1 # comment", "1"),
    ("A=a#b", "a#b"),
    ("A='x # y'", "x # y"),
    ('A="x # y" # c', "x # y"),
    ('A="say \\"hi\\""', 'say "hi"'),
    ("A=", ""),
    ("A=#x9secret", "#x9secret"),
    ("A= #comment", ""),
    ("A=''", ""),
    ('A={"k": "v"}', '{"k": "v"}'),
])
def test_value_forms(line, value):
    assert values(line + "\n") == {"A": value}


def test_multiline_double_quoted_value():
    text = 'CERT="line1\nline2"\nB=2\n'
    assert values(text) == {"CERT": "line1\nline2", "B": "2"}
    assert lookup(parse(text), "B")[0].line == 3


@pytest.mark.parametrize("text, line, fragment", [
    ("A=1\nnot an assignment\n", 2, "expected '=' after the variable name"),
    ("A=1\n=5\n", 2, "expected a variable name"),
    ('A=1\nPASSWORD="s3cret\n', 2, "unterminated double quote in the value of PASSWORD"),
    ("A='x' junk\n", 1, "unexpected text after the closing quote of A"),
])
def test_malformed_lines_name_the_line_not_the_value(text, line, fragment):
    with pytest.raises(EnvFileError) as err:
        parse(text)
    assert err.value.line == line
    assert fragment in str(err.value)
    assert "s3cret" not in str(err.value)


@pytest.mark.parametrize("before, after", [
    ("A=1\nQFIELDCLOUD_WORKER_REPLICAS=2\nB=3\n", "A=1\nQFIELDCLOUD_WORKER_REPLICAS=4\nB=3\n"),
    ("QFIELDCLOUD_WORKER_REPLICAS=2", "QFIELDCLOUD_WORKER_REPLICAS=4"),
    ("export QFIELDCLOUD_WORKER_REPLICAS=2\n", "export QFIELDCLOUD_WORKER_REPLICAS=4\n"),
    ('QFIELDCLOUD_WORKER_REPLICAS="2"  # four later\n', 'QFIELDCLOUD_WORKER_REPLICAS="4"  # four later\n'),
    ("QFIELDCLOUD_WORKER_REPLICAS='2'\n", "QFIELDCLOUD_WORKER_REPLICAS='4'\n"),
    ("QFIELDCLOUD_WORKER_REPLICAS = 2 # c\n", "QFIELDCLOUD_WORKER_REPLICAS = 4 # c\n"),
    ("A=1\r\nQFIELDCLOUD_WORKER_REPLICAS=2\r\n# x\r\n", "A=1\r\nQFIELDCLOUD_WORKER_REPLICAS=4\r\n# x\r\n"),
    ("QFIELDCLOUD_WORKER_REPLICAS=\n", "QFIELDCLOUD_WORKER_REPLICAS=4\n"),
    ("QFIELDCLOUD_WORKER_REPLICAS= # workers\n", "QFIELDCLOUD_WORKER_REPLICAS= 4 # workers\n"),
    ("\ufeffQFIELDCLOUD_WORKER_REPLICAS=2\n", "\ufeffQFIELDCLOUD_WORKER_REPLICAS=4\n"),
])
def test_set_value_edits_in_place(before, after):
    assert set_value(before, "QFIELDCLOUD_WORKER_REPLICAS", "4") == after


def test_set_value_keeps_every_other_byte_of_the_upstream_layout():
    edited = set_value(UPSTREAM_LIKE, "QFIELDCLOUD_WORKER_REPLICAS", "4")
    assert edited == UPSTREAM_LIKE.replace("QFIELDCLOUD_WORKER_REPLICAS=1", "QFIELDCLOUD_WORKER_REPLICAS=4")


def test_set_value_edits_the_last_duplicate():
    text = "R=1\nA=x\nR=2\n"
    assert set_value(text, "R", "5") == "R=1\nA=x\nR=5\n"
    entry, count = lookup(parse(text), "R")
    assert (entry.value, count, entry.line) == ("2", 2, 3)


@pytest.mark.parametrize("before, after", [
    ("A=1\n", "A=1\nR=4\n"),
    ("A=1", "A=1\nR=4\n"),
    ("A=1\r\n", "A=1\r\nR=4\r\n"),
    ("A=1\r\nB=2", "A=1\r\nB=2\r\nR=4\r\n"),
    ("", "R=4\n"),
])
def test_set_value_appends_with_the_file_line_ending(before, after):
    assert set_value(before, "R", "4") == after


def test_set_value_is_a_fixed_point():
    once = set_value(UPSTREAM_LIKE, "QFIELDCLOUD_WORKER_REPLICAS", "4")
    assert set_value(once, "QFIELDCLOUD_WORKER_REPLICAS", "4") == once


@pytest.mark.parametrize("key, secret", [
    ("POSTGRES_PASSWORD", True), ("SECRET_KEY", True), ("AWS_ACCESS_KEY_ID", True), ("SENTRY_DSN", True),
    ("QFIELDCLOUD_API_TOKEN", True), ("STORAGES", True), ("POSTGRES_USER", False), ("MONKEY_COUNT", False),
    ("STORAGES_PROJECT_DEFAULT_STORAGE", False),
    ("QFIELDCLOUD_WORKER_REPLICAS", False), ("COMPOSE_FILE", False),
])
def test_secret_keys(key, secret):
    assert is_secret_key(key) is secret


def test_mask_replaces_every_secret_longest_first():
    entries = parse("POSTGRES_PASSWORD=abcdefgh\nSECRET_KEY=abcdefghijk\nUSER=abc-user\n")
    secrets = secret_values(entries)
    assert secrets == ["abcdefghijk", "abcdefgh"]
    assert mask("pw abcdefghijk and abcdefgh", secrets) == "pw %s and %s" % (MASK, MASK)


def test_flags_and_counts_under_secret_looking_keys_are_masked_only_bound_to_their_name():
    # Ansible masks a no_log value inside every string and every number: "1" or "true" alone would garble the output
    entries = parse("QFIELDCLOUD_PASSWORD_LOGIN_IS_ENABLED=1\nSTORAGES_PROJECT_DEFAULT_STORAGE=default\n"
                    "API_TOKEN_REQUIRED=true\nPOSTGRES_PASSWORD=3shJDd2r7Twwkehb\n")
    secrets = secret_values(entries)
    assert "3shJDd2r7Twwkehb" in secrets
    assert not {"1", "true", "default"} & set(secrets)
    assert not [s for s in secrets if "STORAGES_PROJECT_DEFAULT_STORAGE" in s]
    assert mask("replicas: 1, ok: true, QFIELDCLOUD_PASSWORD_LOGIN_IS_ENABLED=1", secrets) == \
        "replicas: 1, ok: true, %s" % MASK
    assert mask('{"API_TOKEN_REQUIRED": "true"}', secrets) == "{%s}" % MASK


def test_digit_only_secrets_are_masked_wherever_they_appear():
    """Issue 21, defect 5: POSTGRES_PASSWORD=83920147 was never masked (a digit-only value counted as a count)."""
    entries = parse("POSTGRES_PASSWORD=83920147\nSECRET_KEY=0042\nWEB_HTTP_PORT=8011\nQFIELDCLOUD_WORKER_REPLICAS=4\n"
                    "DATABASE_URL=postgres://qfc:55512345@db:5432/qfc\n")
    secrets = secret_values(entries)
    assert {"83920147", "0042", "55512345"} <= set(secrets)
    assert not {"8011", "4", "5432"} & set(secrets)  # ports and counts under other names stay readable
    stderr = 'invalid duration "83920147"; POSTGRES_PASSWORD: 0042; port 8011, 4 replicas, db:5432 55512345'
    assert mask(stderr, secrets) == 'invalid duration "%s"; POSTGRES_PASSWORD: %s; port 8011, 4 replicas, db:5432 %s' \
        % (MASK, MASK, MASK)


def test_numbers_under_a_settings_name_are_masked_bound_to_it_whatever_their_length():
    # upstream's .env.example: a 4-digit number masked everywhere would hide 4096 in every size and container ID
    entries = parse("LETSENCRYPT_RSA_KEY_SIZE=4096\nQFIELDCLOUD_AUTH_TOKEN_EXPIRATION_HOURS=8760\n"
                    "POSTGRES_PASSWORD=4096\nSECRET_KEY_LENGTH=s3cr3t-anyway\n")
    secrets = secret_values(entries)
    assert "8760" not in secrets and "s3cr3t-anyway" in secrets
    assert "4096" in secrets  # also the value of POSTGRES_PASSWORD: a password is masked wherever it appears
    assert mask("QFIELDCLOUD_AUTH_TOKEN_EXPIRATION_HOURS=8760, 8760 h", secrets) == "%s, 8760 h" % MASK


@pytest.mark.parametrize("line, shown", [
    ("GEODB_PASSWORD=123", ["GEODB_PASSWORD=123", 'GEODB_PASSWORD: "123"', '"GEODB_PASSWORD": "123"',
                            "GEODB_PASSWORD: 123"]),
    ("DATABASE_URL=postgres://qfc:12@db/qfc", ["postgres://qfc:12@db/qfc"]),
    ("WEBHOOK=https://chat.example.com/hook?token=7", ["https://chat.example.com/hook?token=7"]),
    ('STORAGES={"default": {"OPTIONS": {"secret_access_key": "99"}}}', ['{"secret_access_key": "99"}']),
])
def test_short_numeric_secrets_are_masked_where_bound_to_their_name(line, shown):
    """A number shorter than MIN_NUMERIC_SECRET_LENGTH is masked next to its name, never inside other numbers."""
    secrets = secret_values(parse(line + "\n"))
    value = re.search(r"(\d+)\D*$", line).group(1)
    assert value not in secrets
    for text in shown:
        assert value not in mask("error: %s" % text, secrets), text
    assert mask("replicas %s, rc %s" % (value, value), secrets) == "replicas %s, rc %s" % (value, value)


SPECIAL = 'p$ss #w"o\'rd x'  # $, #, both quotes and spaces


@pytest.mark.parametrize("line, value", [
    ("POSTGRES_PASSWORD=83920147", "83920147"),
    ("POSTGRES_PASSWORD='p$ss #w\"rd x'", 'p$ss #w"rd x'),
    ('POSTGRES_PASSWORD="p\\$ss #w\\"o\'rd x"', SPECIAL),
    ("DATABASE_URL=postgres://qfc:83920147@db/qfc", "83920147"),
    ("DATABASE_URL=postgres://qfc:%s@db/qfc" % quote(SPECIAL, safe=""), SPECIAL),
    ("STORAGES='%s'" % json.dumps({"default": {"OPTIONS": {"secret_access_key": 'p$ss #w"rd x'}}}), 'p$ss #w"rd x'),
])
def test_digit_only_and_special_character_secrets_are_masked_in_every_form(line, value):
    """Raw, Go-quoted (Compose's errors), JSON-escaped (ASCII or not) and percent-encoded."""
    secrets = secret_values(parse(line + "\n"))
    forms = {value, go_quoted(value), json.dumps(value)[1:-1], quote(value, safe="")}
    for form in forms:
        masked = mask('error: invalid duration "%s" in line' % form, secrets)
        assert masked == 'error: invalid duration "%s" in line' % MASK, (form, masked)


def test_bare_keys_are_inherited_and_skipped():
    assert values("A=1\nINHERITED\nB=2\n") == {"A": "1", "B": "2"}


def test_short_secrets_under_secret_looking_keys_are_masked():
    entries = parse("SECRET_KEY=k3y!z\nPOSTGRES_PASSWORD=ab\nQFIELDCLOUD_PASSWORD_LOGIN_IS_ENABLED=1\n")
    assert {s for s in secret_values(entries) if "QFIELDCLOUD_PASSWORD_LOGIN_IS_ENABLED" not in s} == \
        {"k3y!z", "k3y%21z", "ab"}


@pytest.mark.parametrize("line, secret", [
    ("DATABASE_URL=postgres://qfc:Pw9x@db:5432/qfc", "Pw9x"),
    ("DATABASE_URL=postgres://qfc:p%40ss@db/qfc", "p@ss"),  # percent-decoded too
    ("S3_ENDPOINT=https://AKIAQFCT:wJalr5ecret@s3.example.com/b", "wJalr5ecret"),
    ("S3_URL=https://s3.example.com/b?X-Amz-Signature=f00dfeed&region=eu", "f00dfeed"),
    ("WEBHOOK=https://chat.example.com/hook?token=t0k3n", "t0k3n"),
    ("STORAGES={\"default\": {\"OPTIONS\": {\"secret_access_key\": \"zz-s\", \"endpoint_url\": \"https://a:b9@h\"}}}",
     "zz-s"),
    ("STORAGES={\"default\": {\"OPTIONS\": {\"endpoint_url\": \"https://a:b9@h\"}}}", "b9"),
])
def test_credentials_inside_values_are_masked_whatever_the_key(line, secret):
    secrets = secret_values(parse(line + "\n"))
    assert secret in secrets
    assert secret not in mask("error: invalid value %s" % secret, secrets)


def test_urls_without_credentials_are_not_masked():
    assert secret_values(parse("QFIELDCLOUD_HOST_URL=https://app.example.com/path?region=eu\n")) == []


def test_escaped_forms_of_a_secret_are_masked():
    # Compose quotes values with Go in its errors: `time: invalid duration "s3\"k\\\xc3\xa9-x"`.
    entries = parse('DJANGO_SUPERUSER_PASSWORD="s3\\"k\\\\\u00e9-x"\n')
    assert entries[0].value == 's3"k\\\u00e9-x'
    secrets = secret_values(entries)
    go = 's3\\"k\\\\\\xc3\\xa9-x'
    stderr = "error decoding 'services[a].stop_grace_period': time: invalid duration \"%s\"" % go
    assert go in secrets and "s3" not in mask(stderr, secrets)
    assert 's3\\"k\\\\\\u00e9-x' in secrets  # JSON-escaped
    assert mask(json.dumps({"stderr": entries[0].value}), secrets) == '{"stderr": "%s"}' % MASK


def test_masking_a_value_with_a_non_utf8_byte_does_not_fail():
    text = b"POSTGRES_PASSWORD=p\xe4ss-word\n".decode("utf-8", errors="surrogateescape")
    secrets = secret_values(parse(text))
    assert text.split("=")[1].strip() in secrets
