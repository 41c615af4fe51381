"""Python readers of the generated formats, each following its server's own tokenizer, so a test
can compare the directives a file holds (name, arguments, nesting) with the intended ones.

- nginx: ``ngx_conf_read_token`` (src/core/ngx_conf_file.c): ``#`` comments from a token start,
  ``"``/``'`` quoted tokens with ``\\"``, ``\\'``, ``\\\\``, ``\\t``, ``\\r``, ``\\n`` decoded (any other
  backslash kept), a bare token ends at whitespace, ``;``, ``{``, ``}``.
- HAProxy: ``parse_line`` (src/tools.c): ``#`` comments outside quotes, single quotes (nothing
  decoded), double quotes (``\\`` escapes, ``$VAR`` expanded: refused here), ``\\`` escapes outside.
- Apache httpd: ``ap_cfg_getline`` (a final ``\\`` continues the line) and ``ap_getword_conf``
  (``"``/``'`` quoted words, only ``\\<quote>`` decoded), ``<Section>`` containers.
- systemd: ``[Section]``, ``Key=Value``, ``#``/``;`` comments, a final ``\\`` continues.

They raise ``SyntaxError`` on anything the server itself would refuse or read differently
(an unterminated quote, an unbalanced block).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list["Directive"] | None = None

    def flat(self, depth: int = 0) -> list[tuple[int, str, tuple[str, ...]]]:
        out = [(depth, self.name, tuple(self.args))]
        for child in self.block or []:
            out += child.flat(depth + 1)
        return out


def flatten(directives: list[Directive]) -> list[tuple[int, str, tuple[str, ...]]]:
    return [row for directive in directives for row in directive.flat()]


# -- nginx ---------------------------------------------------------------------------------

_NGINX_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}


def _nginx_tokens(text: str) -> list[tuple[str, bool]]:
    """(token, quoted) pairs; ``;``, ``{``, ``}`` as their own unquoted tokens."""
    tokens: list[tuple[str, bool]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
        elif ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif ch in ";{}":
            tokens.append((ch, False))
            i += 1
        elif ch in "\"'":
            quote, i, word = ch, i + 1, []
            while True:
                if i >= n:
                    raise SyntaxError("nginx: unterminated quoted string")
                c = text[i]
                if c == "\\" and i + 1 < n:
                    nxt = text[i + 1]
                    word.append(_NGINX_ESCAPES.get(nxt, "\\" + nxt))
                    i += 2
                    continue
                if c == quote:
                    i += 1
                    break
                word.append(c)
                i += 1
            if i < n and text[i] not in " \t\r\n;{}":
                raise SyntaxError(f"nginx: unexpected {text[i]!r} after a quoted string")
            tokens.append(("".join(word), True))
        else:
            start, variable = i, False
            while i < n:
                c = text[i]
                if c == "\\" and i + 1 < n:
                    i += 2
                    continue
                if c == "$":
                    variable = True
                elif c == "{" and variable and i > start and text[i - 1] == "$":
                    end = text.find("}", i)
                    if end < 0:
                        raise SyntaxError("nginx: unterminated ${")
                    i = end + 1
                    continue
                if c in " \t\r\n;{}":
                    break
                i += 1
            tokens.append((text[start:i], False))
    return tokens


def nginx(text: str) -> list[Directive]:
    """The directives of an nginx configuration."""
    tokens = _nginx_tokens(text)
    position = 0

    def block(top: bool) -> list[Directive]:
        nonlocal position
        out: list[Directive] = []
        words: list[str] = []
        while position < len(tokens):
            token, quoted = tokens[position]
            position += 1
            if not quoted and token == ";":
                if not words:
                    raise SyntaxError("nginx: empty directive")
                out.append(Directive(words[0], words[1:]))
                words = []
            elif not quoted and token == "{":
                if not words:
                    raise SyntaxError("nginx: block without a name")
                out.append(Directive(words[0], words[1:], block(False)))
                words = []
            elif not quoted and token == "}":
                if top or words:
                    raise SyntaxError("nginx: unexpected }")
                return out
            else:
                words.append(token)
        if words or not top:
            raise SyntaxError("nginx: unexpected end of file")
        return out

    return block(True)


# -- HAProxy -------------------------------------------------------------------------------

def haproxy_words(line: str) -> list[str]:
    words: list[str] = []
    word: list[str] | None = None
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c in " \t":
            if word is not None:
                words.append("".join(word))
                word = None
            i += 1
            continue
        if c == "#":
            break
        word = [] if word is None else word
        if c == "\\" and i + 1 < n:
            word.append(line[i + 1])
            i += 2
        elif c == "'":
            end = line.find("'", i + 1)
            if end < 0:
                raise SyntaxError("haproxy: unterminated single quote")
            word.append(line[i + 1:end])
            i = end + 1
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    raise SyntaxError("haproxy: unterminated double quote")
                d = line[i]
                if d == '"':
                    i += 1
                    break
                if d == "$":
                    raise SyntaxError("haproxy: $ inside double quotes is an environment variable")
                if d == "\\" and i + 1 < n:
                    word.append(line[i + 1])
                    i += 2
                    continue
                word.append(d)
                i += 1
        else:
            word.append(c)
            i += 1
    if word is not None:
        words.append("".join(word))
    return words


_HAPROXY_SECTIONS = {"global", "defaults", "frontend", "backend", "listen", "peers", "resolvers",
                     "userlist", "cache", "program", "http-errors", "ring", "mailers"}


def haproxy(text: str) -> list[Directive]:
    """Sections (``frontend fleet``) holding their keyword lines."""
    sections: list[Directive] = []
    for raw in text.split("\n"):
        words = haproxy_words(raw)
        if not words:
            continue
        if words[0] in _HAPROXY_SECTIONS:
            sections.append(Directive(words[0], words[1:], []))
        elif not sections:
            raise SyntaxError(f"haproxy: {words[0]!r} outside a section")
        else:
            assert sections[-1].block is not None
            sections[-1].block.append(Directive(words[0], words[1:]))
    return sections


# -- Apache httpd --------------------------------------------------------------------------

def apache_words(line: str) -> list[str]:
    words, i, n = [], 0, len(line)
    while i < n:
        if line[i] in " \t":
            i += 1
            continue
        if line[i] in "\"'":
            quote, start = line[i], i + 1
            i = start
            while i < n and line[i] != quote:
                i += 2 if line[i] == "\\" and i + 1 < n and line[i + 1] == quote else 1
            if i >= n:
                raise SyntaxError("apache: unterminated quote")
            words.append(line[start:i].replace("\\" + quote, quote))
            i += 1
        else:
            start = i
            while i < n and line[i] not in " \t":
                i += 1
            words.append(line[start:i])
    return words


def apache(text: str) -> list[Directive]:
    lines: list[str] = []
    pending = ""
    for raw in text.split("\n"):
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        lines.append(pending + raw)
        pending = ""
    root: list[Directive] = []
    stack: list[list[Directive]] = [root]
    names: list[str] = []
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if "${" in stripped:
            raise SyntaxError("apache: ${...} is expanded as a variable")
        if stripped.startswith("</"):
            if not stripped.endswith(">") or not names or stripped[2:-1].lower() != names[-1].lower():
                raise SyntaxError(f"apache: unbalanced {stripped!r}")
            names.pop()
            stack.pop()
        elif stripped.startswith("<"):
            if not stripped.endswith(">"):
                raise SyntaxError(f"apache: {stripped!r} has no closing >")
            words = apache_words(stripped[1:-1])
            section = Directive(words[0], words[1:], [])
            stack[-1].append(section)
            assert section.block is not None
            stack.append(section.block)
            names.append(words[0])
        else:
            words = apache_words(stripped)
            stack[-1].append(Directive(words[0], words[1:]))
    if names:
        raise SyntaxError(f"apache: <{names[-1]}> not closed")
    return root


# -- systemd -------------------------------------------------------------------------------

def systemd(text: str) -> list[Directive]:
    sections: list[Directive] = []
    pending = ""
    for raw in text.split("\n"):
        line = (pending + raw).strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if line.startswith("["):
            if not line.endswith("]"):
                raise SyntaxError(f"systemd: bad section {line!r}")
            sections.append(Directive(line[1:-1], [], []))
        elif "=" in line and sections:
            key, _, value = line.partition("=")
            assert sections[-1].block is not None
            sections[-1].block.append(Directive(key.strip(), [value.strip()]))
        else:
            raise SyntaxError(f"systemd: not KEY=VALUE: {line!r}")
    return sections


_C_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
              "\\": "\\", '"': '"', "'": "'", "s": " "}


def systemd_exec_words(value: str) -> list[str]:
    """ExecStart= words: systemd's ``extract_first_word`` with UNQUOTE|CUNESCAPE, then ``$$`` and
    ``%%`` (an unescaped ``$NAME`` or ``%x`` is refused: it would be expanded)."""
    words: list[str] = []
    i, n = 0, len(value)
    while i < n:
        if value[i] in " \t":
            i += 1
            continue
        raw: list[bytes] = []
        quote = None
        while i < n and (quote or value[i] not in " \t"):
            c = value[i]
            if c == "\\" and i + 1 < n:
                nxt = value[i + 1]
                if nxt == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", value[i + 2:i + 4]):
                    raw.append(bytes([int(value[i + 2:i + 4], 16)]))
                    i += 4
                    continue
                raw.append(_C_ESCAPES.get(nxt, nxt).encode())
                i += 2
                continue
            if quote is None and c in "\"'":
                quote = c
            elif c == quote:
                quote = None
            else:
                raw.append(c.encode("utf-8", "surrogateescape"))
            i += 1
        if quote:
            raise SyntaxError("systemd: unterminated quote")
        words.append(b"".join(raw).decode("utf-8", "surrogateescape"))
    out = []
    for word in words:
        if re.search(r"(?<!\$)\$(?!\$)", word.replace("$$", "")) or re.search(r"%(?!%)", word.replace("%%", "")):
            raise SyntaxError(f"systemd: {word!r} would be expanded")
        out.append(word.replace("$$", "$").replace("%%", "%"))
    return out


# -- Dockerfile ----------------------------------------------------------------------------

def docker_unescape(word: str) -> str:
    """A word after Docker's lexer: ``\\x`` is ``x``; an unescaped ``$`` would be expanded."""
    out, i = [], 0
    while i < len(word):
        if word[i] == "\\" and i + 1 < len(word):
            out.append(word[i + 1])
            i += 2
            continue
        if word[i] == "$":
            raise SyntaxError(f"docker: {word!r} would expand a variable")
        out.append(word[i])
        i += 1
    return "".join(out)


@dataclass
class DockerInstruction:
    name: str
    rest: str
    fields: dict[str, str] = field(default_factory=dict)


def dockerfile(text: str) -> list[DockerInstruction]:
    out: list[DockerInstruction] = []
    pending = ""
    for raw in text.split("\n"):
        if not pending and raw.lstrip().startswith("#"):
            continue
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        line = (pending + raw).strip()
        pending = ""
        if not line:
            continue
        name, _, rest = line.partition(" ")
        if not name.isalpha() or not name.isupper():
            raise SyntaxError(f"docker: not an instruction: {line!r}")
        out.append(DockerInstruction(name, rest))
    return out
