"""How a value is written into each generated format: one quoting rule per format, nothing else.

Option values are validated where they are parsed (``fleet.values``: a URL path holds only
RFC 3986 path characters, a file path no ``"``, ``\\``, ``$`` or control character, a host is
an address or a DNS name). The writers still quote every value that came from a user with the
rule of the format it lands in, so that a value is always one argument of one directive, and a
comment always one line, whatever the validation lets through. Pure functions.
"""

from __future__ import annotations

import json
import re

# Written bare when a value holds only these (so ordinary files read as before); else quoted.
_BARE = re.compile(r"[A-Za-z0-9_/.:@=+,*!&~%\[\]-]+")
# Characters that end or break a line in one of the formats (LF, CR, VT, FF, NEL, LS, PS) and
# every other control or invisible format character: shown as escapes in comments.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


def visible(text: str) -> str:
    """``text`` with every control character written as ``\\xNN`` / ``\\uNNNN`` (for comments
    and descriptions: a newline there would start a directive)."""
    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _UNPRINTABLE.sub(escape, text)


def comment_line(text: str) -> str:
    """One line of comment text: no control character, and no final backslash (Apache and
    systemd continue a line that ends in one)."""
    line = visible(text).rstrip()
    return line[:-1] + "\\x5c" if line.endswith("\\") else line


# -- nginx ---------------------------------------------------------------------------------

# ``geo $fleet_dollar { default "$"; }``: nginx has no escape for ``$`` in a value that
# takes variables (map values, add_header); ``${fleet_dollar}`` stands for it there.
NGINX_DOLLAR = "${fleet_dollar}"
NGINX_DOLLAR_GEO = ["geo $fleet_dollar {", '    default "$";', "}"]


def nginx(word: str) -> str:
    """One nginx argument: bare when plain, else in double quotes with ``\\`` and ``"`` escaped
    (``;``, ``{``, ``}``, ``#``, quotes and spaces then lose their meaning)."""
    if _BARE.fullmatch(word):
        return word
    return '"' + visible(word).replace("\\", "\\\\").replace('"', '\\"') + '"'


def nginx_value(text: str) -> str:
    """An nginx argument that takes variables (map value): also ``$`` written literally."""
    return nginx(text.replace("$", NGINX_DOLLAR))


# -- HAProxy -------------------------------------------------------------------------------

def haproxy(word: str) -> str:
    """One HAProxy argument: bare when plain, else in single quotes (no escape or variable is
    read inside them); a ``'`` is written ``'\\''``, as in a shell."""
    if _BARE.fullmatch(word):
        return word
    return "'" + visible(word).replace("'", "'\\''") + "'"


# -- Apache httpd --------------------------------------------------------------------------

def apache(word: str) -> str:
    """One Apache argument in double quotes (``"`` escaped). Validation keeps ``\\`` and ``${``
    out: Apache has no escape for a final backslash and expands ``${VAR}`` everywhere."""
    return '"' + visible(word).replace('"', '\\"') + '"'


def apache_format(text: str) -> str:
    """Literal text in a mod_headers format string (``Header set``): ``%`` doubled."""
    return text.replace("%", "%%")


# -- systemd -------------------------------------------------------------------------------

def _systemd_escape(match: re.Match[str]) -> str:
    return "".join(f"\\x{byte:02x}" for byte in match.group().encode("utf-8", "surrogateescape"))


def systemd_word(word: str) -> str:
    """One ExecStart word: ``$`` and ``%`` escaped, quoted when needed, control characters as
    C escapes (``\\x0a``), which systemd decodes."""
    escaped = word.replace("%", "%%").replace("$", "$$")
    if escaped and not any(ch in escaped for ch in " \t\n\"'\\;") and not _UNPRINTABLE.search(escaped):
        return escaped
    body = escaped.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + _UNPRINTABLE.sub(_systemd_escape, body) + '"'


def systemd_value(text: str) -> str:
    """A whole-line setting (Description=, WorkingDirectory=): ``%`` doubled, one line."""
    return comment_line(text.replace("%", "%%"))


# -- Dockerfile ----------------------------------------------------------------------------

def dockerfile_list(words: list[str]) -> str:
    """A JSON array (exec form) for an instruction whose words Docker expands (COPY): ``$``
    and ``\\`` escaped for Docker's word lexer, then JSON-quoted."""
    return json.dumps([word.replace("\\", "\\\\").replace("$", "\\$") for word in words])


def dockerfile_word(word: str) -> str:
    """A word of an instruction that takes the rest of the line (WORKDIR): escaped for Docker's
    lexer, one line."""
    if _BARE.fullmatch(word):
        return word
    return visible(word).replace("\\", "\\\\").replace("$", "\\$").replace(" ", "\\ ")


__all__ = ["NGINX_DOLLAR", "NGINX_DOLLAR_GEO", "apache", "apache_format", "comment_line",
           "dockerfile_list", "dockerfile_word", "haproxy", "nginx", "nginx_value",
           "systemd_value", "systemd_word", "visible"]
