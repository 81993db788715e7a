# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Read and edit a Docker Compose ``.env`` file without disturbing any other byte.

Pure functions only: no I/O, so they are unit-tested on strings. The grammar follows the subset of
Compose's dotenv format that QFieldCloud's ``.env.example`` uses: comments, blank lines, ``export``
prefixes, unquoted values with `` #`` comments, single- and double-quoted values (double quotes may
span lines). Anything else is reported with its line number and never with its value, because the
value may be a secret.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote, unquote
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # typing only: never imported on the managed node
    from collections.abc import Iterable

KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
SECRET_KEY_RE = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|DSN|(?:^|_)KEY(?:_|$)|^STORAGES$", re.IGNORECASE)
# A secret is a secret whatever its characters: every non-empty value under a secret-looking key is masked, digits
# only (POSTGRES_PASSWORD=83920147) and short ones (SECRET_KEY=ab) included, and so are URL passwords and secret
# JSON members. Masking a value also masks its other occurrences in the output; that is the price.
MIN_SECRET_LENGTH = 1
# Where a value is masked sets the price. The values go to Ansible's no_log_values, and Ansible masks a no_log value
# inside every string and replaces every *number* of a result that contains it (replicas, rc, a port) by
# VALUE_SPECIFIED_IN_NO_LOG_PARAMETER. So a number shorter than MIN_NUMERIC_SECRET_LENGTH characters or a flag word
# (QFIELDCLOUD_PASSWORD_LOGIN_IS_ENABLED=1, API_TOKEN_REQUIRED=true, a 3-digit password), masked wherever it appears,
# would garble every output: it is masked only where it is shown bound to its name (``NAME=1``, ``NAME: "1"``,
# ``"NAME": "1"``, ``user:1@`` in a URL, ``token=1`` in a query), the name with it. Every other value is masked
# wherever it appears, digit-only ones from MIN_NUMERIC_SECRET_LENGTH digits on.
MIN_NUMERIC_SECRET_LENGTH = 4
COMMON_VALUE_RE = re.compile(r"^(?:[-+]?[0-9]*\.?[0-9]+|true|false|yes|no|on|off|none|null)$", re.IGNORECASE)
# A secret-looking name that ends in a unit or a switch names a setting, not a secret (upstream's
# LETSENCRYPT_RSA_KEY_SIZE=4096, QFIELDCLOUD_AUTH_TOKEN_EXPIRATION_HOURS=720): a number or flag word under it is
# masked bound to its name only, whatever its length.
SETTING_NAME_RE = re.compile(r"_(?:SIZE|LENGTH|BITS|COUNT|HOURS|MINUTES|SECONDS|DAYS|TTL|TIMEOUT|ENABLED|DISABLED|"
                             r"REQUIRED)$", re.IGNORECASE)
# Credentials inside values, whatever the key: ``scheme://user:password@host`` (DATABASE_URL, an S3 endpoint with
# its keys) and query parameters such as ``?password=`` or ``&X-Amz-Signature=``.
URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
SECRET_PARAM_RE = re.compile(r"PASS|SECRET|TOKEN|KEY|SIGNATURE|^SIG$|CREDENTIAL|AUTH", re.IGNORECASE)
MASK = "********"


class EnvFileError(ValueError):
    """A malformed ``.env``. The message names the line, never the value."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        super().__init__("line %d: %s" % (line, message))


class Entry:
    """One ``KEY=VALUE`` assignment with the character offsets of its value in the file text."""

    __slots__ = ("key", "value", "line", "quote", "value_start", "value_end", "line_start", "line_end")

    def __init__(self, key: str, value: str, line: int, quote: str, value_start: int, value_end: int,
                 line_start: int, line_end: int) -> None:
        self.key = key
        self.value = value
        self.line = line
        self.quote = quote
        self.value_start = value_start
        self.value_end = value_end
        self.line_start = line_start
        self.line_end = line_end

    def __repr__(self) -> str:
        return "Entry(%r, line=%d)" % (self.key, self.line)


def newline_of(text: str) -> str:
    """The line ending the file already uses (CRLF or LF)."""
    pos = text.find("\n")
    return "\r\n" if pos > 0 and text[pos - 1] == "\r" else "\n"


def _line_end(text: str, pos: int) -> int:
    """Offset just after the end of the line containing ``pos`` (after its newline)."""
    nl = text.find("\n", pos)
    return len(text) if nl < 0 else nl + 1


def parse(text: str) -> list[Entry]:
    """Return the list of entries in file order. Raises EnvFileError on malformed input."""
    entries = []
    pos = 0
    line = 1
    size = len(text)
    while pos < size:
        line_start = pos
        end = _line_end(text, pos)
        raw = text[pos:end]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#") or stripped == "\ufeff":
            pos = end
            line += 1
            continue
        cur = pos + (len(raw) - len(raw.lstrip(" \t\ufeff")))
        if text.startswith("export ", cur) or text.startswith("export\t", cur):
            cur += len("export ")
            while cur < size and text[cur] in " \t":
                cur += 1
        match = KEY_RE.match(text, cur)
        if not match:
            raise EnvFileError(line, "expected a variable name")
        key = match.group(0)
        cur = match.end()
        while cur < size and text[cur] in " \t":
            cur += 1
        if cur >= size or text[cur] in "\r\n":  # a bare KEY: Compose takes it from the environment; nothing to read
            pos = end
            line += 1
            continue
        if text[cur] != "=":
            # never quote the line: a stray line may be a secret pasted out of place
            raise EnvFileError(line, "expected '=' after the variable name")
        cur += 1
        after_equals = cur
        while cur < size and text[cur] in " \t":
            cur += 1
        value_start = cur
        quote = text[cur] if cur < size and text[cur] in "'\"" else ""
        first_line = line
        if quote:
            value, cur, line = _read_quoted(text, cur, quote, line, key)
            value_end = cur
            rest_end = _line_end(text, cur)
            rest = text[cur:rest_end].strip()
            if rest and not rest.startswith("#"):
                raise EnvFileError(line, "unexpected text after the closing quote of %s" % key)
            end = rest_end
        else:
            value, value_end = _read_unquoted(text, cur, end, spaced=cur > after_equals)
        entries.append(Entry(key, value, first_line, quote, value_start, value_end, line_start, end))
        pos = end
        line += 1
    return entries


def _read_quoted(text: str, cur: int, quote: str, line: int, key: str) -> tuple[str, int, int]:
    """Read a quoted value starting at the opening quote. Returns (value, offset after quote, line)."""
    out: list[str] = []
    opened_at = line
    i = cur + 1
    size = len(text)
    while i < size:
        ch = text[i]
        if ch == quote:
            return "".join(out), i + 1, line
        if ch == "\\" and quote == '"' and i + 1 < size:
            nxt = text[i + 1]
            out.append({"n": "\n", "t": "\t", "r": "\r"}.get(nxt, nxt) if nxt in 'ntr"\\$' else ch + nxt)
            i += 2
            continue
        if ch == "\n":
            line += 1
        out.append(ch)
        i += 1
    kind = "double" if quote == '"' else "single"
    raise EnvFileError(opened_at, "unterminated %s quote in the value of %s" % (kind, key))


def _read_unquoted(text: str, cur: int, end: int, spaced: bool) -> tuple[str, int]:
    """An unquoted value ends at the line end or at a ``#`` preceded by white space (``KEY=#x`` is the value ``#x``;
    ``KEY= #x`` is an empty value and a comment). ``spaced``: white space stood between ``=`` and the value."""
    segment = text[cur:end].rstrip("\r\n")
    cut = len(segment)
    for i, ch in enumerate(segment):
        if ch == "#" and ((i == 0 and spaced) or (i > 0 and segment[i - 1] in " \t")):
            cut = i
            break
    value = segment[:cut].rstrip(" \t")
    return value, cur + len(value)


def read(path: str) -> tuple[bytes, str, list[Entry]]:
    """Read and parse a .env file: (raw bytes, text, entries). Bytes that are not UTF-8 survive a round trip
    (surrogateescape), so an edit writes them back unchanged. Raises EnvFileError on malformed input."""
    with open(path, "rb") as handle:
        raw = handle.read()
    text = raw.decode("utf-8", errors="surrogateescape")
    return raw, text, parse(text)


def value_in(path: str, key: str) -> str | None:
    """The value Compose uses for ``key`` in the file now; None when absent, or the file unreadable or malformed."""
    try:
        _raw, _text, entries = read(path)
    except (OSError, EnvFileError):
        return None
    entry, _count = lookup(entries, key)
    return entry.value if entry else None


def printable(text: str) -> str:
    """Bytes that are not UTF-8 (a Latin-1 comment) were read as surrogates; results must be valid UTF-8."""
    return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


def lookup(entries: Iterable[Entry], key: str) -> tuple[Entry | None, int]:
    """The entry Compose uses for ``key``: the last one. Returns (entry or None, number of duplicates)."""
    found = [e for e in entries if e.key == key]
    return (found[-1] if found else None), len(found)


def _format_value(value: str, quote: str) -> str:
    if quote == "'":
        return "'%s'" % value
    if quote == '"':
        return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')
    return value


def set_value(text: str, key: str, value: str) -> str:
    """Return ``text`` with ``key`` set to ``value``.

    The last assignment of ``key`` is edited in place (its ``export`` prefix, quoting, inline comment and line
    ending are kept); an absent key is appended with the file's own line ending.
    """
    entries = parse(text)
    entry, _count = lookup(entries, key)
    if entry is not None:
        formatted = _format_value(value, entry.quote)
        if entry.value_start == entry.value_end and text.startswith("#", entry.value_end):
            formatted += " "  # an empty value followed by a comment: keep the comment a comment
        return text[:entry.value_start] + formatted + text[entry.value_end:]
    nl = newline_of(text)
    if text and not text.endswith("\n"):
        text += nl
    return text + "%s=%s%s" % (key, value, nl)


def entry_text(text: str, entry: Entry) -> str:
    """The file lines holding ``entry``."""
    return text[entry.line_start:entry.line_end]


def is_secret_key(key: str) -> bool:
    return bool(SECRET_KEY_RE.search(key))


def is_common_value(value: str) -> bool:
    """A value too common in text to be masked wherever it appears: a flag word, or a number shorter than
    MIN_NUMERIC_SECRET_LENGTH characters (see the comment at MIN_NUMERIC_SECRET_LENGTH)."""
    return bool(COMMON_VALUE_RE.match(value)) and (len(value) < MIN_NUMERIC_SECRET_LENGTH
                                                   or not value.lstrip("+-").replace(".", "").isdigit())


def _name_bound(name: str) -> list[tuple[str, str]]:
    """How ``NAME`` and its value are shown together: .env and shell (``NAME=v``, quoted), YAML and Compose's
    ``config`` (``NAME: v``), JSON (``"NAME": "v"``). (prefix, suffix) pairs."""
    return [(name + "=", ""), (name + '="', '"'), (name + "='", "'"), (name + ": ", ""), (name + ': "', '"'),
            (name + ": '", "'"), ('"%s": "' % name, '"'), ('"%s":"' % name, '"'), ('"%s": ' % name, "")]


def secret_values(entries: Iterable[Entry]) -> list[str]:
    """Values to mask, longest first so that masking never leaves a tail of one.

    The values of secret-looking keys (whatever their characters: digits only, ``$``, ``#``, quotes, spaces), the
    passwords and secret query parameters of URLs under any key, secret-looking members of JSON values, and each of
    them also as Compose and Go print it escaped in their error messages (quotes and backslashes escaped, non-ASCII
    as \\xNN or \\uNNNN) and percent-encoded.

    Each is masked wherever it appears, except a common value (a flag word, or a number shorter than
    MIN_NUMERIC_SECRET_LENGTH characters: QFIELDCLOUD_PASSWORD_LOGIN_IS_ENABLED=1, a 3-digit password; or any number
    or flag word under a setting's name, SETTING_NAME_RE: LETSENCRYPT_RSA_KEY_SIZE=4096): that is masked only where
    it is shown bound to its name (``NAME=123``, ``NAME: "123"``, ``"NAME": "123"``,
    ``user:123@`` in a URL, ``token=123`` in a query string), because these values go to Ansible's no_log_values,
    which would otherwise mask them inside every string and every number of the output (``replicas: 1``).
    """
    found: list[tuple[str, list[tuple[str, str]], bool]] = []
    for entry in entries:
        if is_secret_key(entry.key):
            setting = bool(SETTING_NAME_RE.search(entry.key) and COMMON_VALUE_RE.match(entry.value))
            found.append((entry.value, _name_bound(entry.key), setting))
        found += [(value, bindings, False) for value, bindings in _url_candidates(entry.value)]
        found += [(value, bindings, False) for value, bindings in _json_candidates(entry.value)]
    values: set[str] = set()
    for value, bindings, setting in found:
        if len(value) < MIN_SECRET_LENGTH:
            continue
        forms = [v for v in escaped_forms(value) if v]
        if setting or is_common_value(value):
            values.update(prefix + form + suffix for form in forms for prefix, suffix in bindings)
        else:
            values.update(forms)
    return sorted(values, key=len, reverse=True)


def url_secrets(value: str | None) -> list[str]:
    """The password (raw and percent-decoded) and the secret-looking query parameters of every URL in ``value``."""
    return [secret for secret, _bindings in _url_candidates(value)]


def _url_candidates(value: str | None) -> list[tuple[str, list[tuple[str, str]]]]:
    """:func:`url_secrets` as (secret, how it is shown bound to its name) pairs."""
    out: list[tuple[str, list[tuple[str, str]]]] = []
    for match in URL_RE.finditer(value or ""):
        url = match.group(0)
        netloc = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        userinfo, at, _host = netloc.rpartition("@")
        if at and ":" in userinfo:
            user, password = userinfo.split(":", 1)
            bound = [(user + ":", "@"), (unquote(user) + ":", "@")]
            out += [(password, bound), (unquote(password), bound)]
        query = url.split("?", 1)[1].split("#", 1)[0] if "?" in url else ""
        for raw in query.split("&"):
            name, eq, secret = raw.partition("=")
            if eq and secret and SECRET_PARAM_RE.search(unquote(name)):
                bound = [(name + "=", ""), (unquote(name) + "=", "")]
                out += [(secret, bound), (unquote(secret.replace("+", " ")), bound)]
    return out


def json_secrets(value: str | None) -> list[str]:
    """String members under secret-looking keys of a JSON object value (STORAGES' access keys), at any depth."""
    return [secret for secret, _bindings in _json_candidates(value)]


def _json_candidates(value: str | None) -> list[tuple[str, list[tuple[str, str]]]]:
    """:func:`json_secrets` as (secret, how it is shown bound to its name) pairs; URLs in other members too."""
    text = (value or "").strip()
    if not text.startswith("{"):
        return []
    try:
        doc = json.loads(text)
    except ValueError:
        return []
    out: list[tuple[str, list[tuple[str, str]]]] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, member in items:
            if isinstance(member, (dict, list)):
                stack.append(member)
            elif isinstance(member, str) and isinstance(key, str) and (is_secret_key(key)
                                                                       or SECRET_PARAM_RE.search(key)):
                out.append((member, _name_bound(key)))
            elif isinstance(member, str):
                out += _url_candidates(member)
    return out


def go_quoted(value: str) -> str:
    """The inside of Go's time.quote and similar: quote and backslash escaped, other non-ASCII bytes as \\xNN."""
    out: list[str] = []
    for byte in value.encode("utf-8", errors="surrogateescape"):
        char = chr(byte)
        if char in "\"\\":
            out.append("\\" + char)
        elif byte < 0x20 or byte >= 0x7F:
            out.append("\\x%02x" % byte)
        else:
            out.append(char)
    return "".join(out)


def escaped_forms(value: str) -> set[str]:
    """``value`` as it may appear in an error message: raw, JSON- and Go-escaped, percent-encoded."""
    forms = {value, go_quoted(value)}
    try:
        forms.add(quote(value, safe=""))
        forms.add(json.dumps(value)[1:-1])
        forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    except (TypeError, ValueError):  # a lone surrogate from a non-UTF-8 byte (UnicodeEncodeError)
        pass
    return forms


def mask(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value in ``text`` by a fixed mask."""
    if not text:
        return text
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text
