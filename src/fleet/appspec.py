"""What kind of app APP is, decided from the path and source text alone (pure: never imports it).

- a directory with ``main.py`` (or ``main.ipynb``): a Bokeh app directory, served at ``/<name>``
  like ``bokeh serve`` (its ``static/``, ``templates/``, ``theme.yaml`` and ``app_hooks.py`` are
  Bokeh's business);
- a ``.ipynb`` notebook: a Bokeh app (Bokeh runs its code cells; needs ``nbconvert``);
- a ``.py`` script that imports bokeh and calls ``curdoc()`` without defining a Tornado app: a
  Bokeh script, served at ``/<name>``;
- any other ``.py`` file, or ``module:attr``: a Tornado app (a ``tornado.web.Application``
  instance or a ``make_app()`` returning one). Which attribute to use is found by the worker
  when it imports the app (``fleet.worker.load``), not here.

Several APPs (``fleet up a.py b/ c.ipynb``, ``detect_apps``) must all be Bokeh apps with distinct
names, as ``bokeh serve`` needs. A missing or unusable APP raises ``AppError`` with a message meant for the user.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass


class AppKind(enum.Enum):
    BOKEH = "bokeh"
    TORNADO = "tornado"


class AppError(ValueError):
    """APP cannot be used; the message says why and what was expected."""


@dataclass(frozen=True)
class AppSpec:
    kind: AppKind
    path: str | None  # absolute file or directory; None for module:attr
    module: str | None  # "pkg.mod" for module:attr
    attr: str | None  # attribute for module:attr; None means auto-detect
    name: str  # URL name of a Bokeh app ("/<name>") and a label for logs

    @property
    def url_path(self) -> str:
        """Where a browser opens the app: ``/<name>`` for Bokeh, ``/`` for Tornado."""
        return f"/{self.name}" if self.kind is AppKind.BOKEH else "/"


_MODULE_ATTR = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_IMPORTS_BOKEH = re.compile(r"^\s*(?:from\s+bokeh[\s.]|import\s+bokeh\b)", re.MULTILINE)
_USES_CURDOC = re.compile(r"\bcurdoc\s*\(")
_DEFINES_TORNADO_APP = re.compile(r"\bdef\s+make_app\s*\(|\bApplication\s*\(")


def classify_source(source: str) -> AppKind:
    """Bokeh if the script imports bokeh and uses ``curdoc()`` and defines no Tornado app."""
    if _IMPORTS_BOKEH.search(source) and _USES_CURDOC.search(source) and not _DEFINES_TORNADO_APP.search(source):
        return AppKind.BOKEH
    return AppKind.TORNADO


def detect(app: str, cwd: str | None = None) -> AppSpec:
    """Classify APP (relative to ``cwd``); raise AppError with a clear message if unusable."""
    base = cwd or os.getcwd()
    if _MODULE_ATTR.match(app) and not os.path.exists(os.path.join(base, app)):
        module, attr = app.split(":", 1)
        return AppSpec(AppKind.TORNADO, None, module, attr, name=module.rsplit(".", 1)[-1])
    path = os.path.abspath(os.path.join(base, app))
    name = os.path.splitext(os.path.basename(path.rstrip(os.sep)))[0]
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "main.py")) or os.path.isfile(os.path.join(path, "main.ipynb")):
            return AppSpec(AppKind.BOKEH, path, None, None, name=name)
        raise AppError(f"APP directory {app!r} has no main.py (a Bokeh app directory needs one)")
    if not os.path.exists(path):
        raise AppError(
            f"APP not found: {app!r} (expected a .py file, a .ipynb notebook, a Bokeh app directory "
            f"or module:attr; arguments for the app go after --args)"
        )
    if path.endswith(".ipynb"):
        return AppSpec(AppKind.BOKEH, path, None, None, name=name)  # Bokeh's NotebookHandler
    if not path.endswith(".py"):
        raise AppError(f"APP {app!r} is not a .py file, a .ipynb notebook, a directory or module:attr")
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            source = handle.read()
    except OSError as exc:
        raise AppError(f"cannot read APP {app!r}: {exc.strerror}") from None
    return AppSpec(classify_source(source), path, None, None, name=name)


def detect_apps(apps: list[str] | tuple[str, ...], cwd: str | None = None) -> tuple[AppSpec, ...]:
    """Classify every APP; several must all be Bokeh apps with distinct ``/<name>`` paths."""
    specs = tuple(detect(app, cwd) for app in apps)
    if len(specs) > 1:
        others = [app for app, spec in zip(apps, specs) if spec.kind is not AppKind.BOKEH]
        if others:
            raise AppError(
                f"several APPs are served together only when all are Bokeh apps; {others[0]!r} is "
                f"not (a Bokeh script must import bokeh and call curdoc()). To pass arguments to "
                f"the app, put them after --args: fleet up {apps[0]} --args {' '.join(apps[1:])}"
            )
        seen: dict[str, str] = {}
        for app, spec in zip(apps, specs):
            if spec.name in seen:
                raise AppError(f"APPs {seen[spec.name]!r} and {app!r} would both be served at "
                               f"/{spec.name}; rename one")
            seen[spec.name] = app
    return specs
