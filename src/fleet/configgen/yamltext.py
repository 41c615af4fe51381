"""A small YAML writer for the Kubernetes manifests (fleet does not depend on PyYAML).

Only what manifests need: mappings, lists, strings, ints, floats and booleans, in block style.
A string is written plain when YAML reads it back as the same string, else double-quoted with
JSON's escaping (a JSON string is a valid YAML double-quoted scalar), every character YAML could
read as a line break or must not hold raw (C0, C1, NEL, LS, PS, BOM, surrogates) escaped.
The tests load the output with PyYAML and compare it with the input.
"""

from __future__ import annotations

import json
import re
from typing import Any

_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./@=+-]*( [A-Za-z0-9_./@=+-]+)*")
# Words YAML 1.1 (PyYAML, many controllers) reads as booleans or null.
_SPECIAL = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}
_RAW_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff]")


def _quoted(text: str) -> str:
    quoted = json.dumps(text, ensure_ascii=False)
    return _RAW_UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", quoted)


def scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if value is None:
        return "null"
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _SPECIAL:
        return text
    return _quoted(text)


def _lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return [pad + "{}"]
        out = []
        for key, item in value.items():
            head = f"{pad}{scalar(key)}:"
            if isinstance(item, (dict, list)) and item:
                out.append(head)
                out.extend(_lines(item, indent + 2))
            else:
                out.append(f"{head} {_inline(item)}")
        return out
    if isinstance(value, list):
        if not value:
            return [pad + "[]"]
        out = []
        for item in value:
            if isinstance(item, (dict, list)) and item:
                nested = _lines(item, indent + 2)
                out.append(f"{pad}- {nested[0].lstrip()}")
                out.extend(nested[1:])
            else:
                out.append(f"{pad}- {_inline(item)}")
        return out
    return [pad + scalar(value)]


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return scalar(value)


def dump(value: Any) -> str:
    """``value`` as a YAML block document (no ``---``)."""
    return "\n".join(_lines(value, 0)) + "\n"


__all__ = ["dump", "scalar"]
