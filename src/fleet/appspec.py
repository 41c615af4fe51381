"""What kind of app APP is, decided from the path and source text alone (pure: never imports it).

- a directory with ``main.py`` (or ``main.ipynb``): a Bokeh app directory, served at ``/<name>``
  like ``bokeh serve`` (its ``static/``, ``templates/``, ``theme.yaml`` and ``app_hooks.py`` are
  Bokeh's business);
- a ``.ipynb`` notebook: a Bokeh app (Bokeh runs its code cells; needs ``nbconvert``);
- a ``.py`` script that imports bokeh and calls ``curdoc()`` without defining a Tornado app: a
  Bokeh script, served at ``/<name>``;
- a Panel (HoloViz) app: a script or notebook that imports panel (``.servable()``), a directory
  whose ``main.py`` does, or a ``.py`` module that imports panel and defines a module-level dict
  ``APPS`` (what ``pn.serve`` takes: ``{"name": viewable, function or path}``, each served at
  ``/<name>``). Kind ``BOKEH`` (the same server, proxy and settings), ``flavour`` says Panel;
- any other ``.py`` file, or ``module:attr``: a Tornado app (a ``tornado.web.Application``
  instance or a ``make_app()`` returning one). Which attribute to use is found by the worker
  when it imports the app (``fleet.worker.load``), not here.

Several APPs (``fleet up a.py b/ c.ipynb``, ``detect_apps``) must all be Bokeh apps with distinct
names, as ``bokeh serve`` needs. A missing or unusable APP raises ``AppError`` with a message meant for the user.
"""

from __future__ import annotations

import ast
import enum
import json
import os
import re
from dataclasses import dataclass


class AppKind(enum.Enum):
    BOKEH = "bokeh"
    TORNADO = "tornado"


class Flavour(enum.Enum):
    """Which machinery serves a Bokeh-kind app: Bokeh's own, or Panel's on top of it."""

    BOKEH = "bokeh"
    PANEL = "panel"  # a Panel script, notebook or directory (``panel serve``'s handlers)
    PANEL_APPS = "panel-apps"  # a module with a ``pn.serve``-style dict ``APPS``


class AppError(ValueError):
    """APP cannot be used; the message says why and what was expected."""


@dataclass(frozen=True)
class AppSpec:
    kind: AppKind
    path: str | None  # absolute file or directory; None for module:attr
    module: str | None  # "pkg.mod" for module:attr
    attr: str | None  # attribute for module:attr; None means auto-detect
    name: str  # URL name of a Bokeh app ("/<name>") and a label for logs
    flavour: Flavour = Flavour.BOKEH

    @property
    def url_path(self) -> str:
        """Where a browser opens the app: ``/<name>`` for Bokeh, ``/`` for Tornado and for a
        dict of Panel apps (Panel's index of them, or the only one)."""
        return f"/{self.name}" if self.kind is AppKind.BOKEH and self.flavour is not Flavour.PANEL_APPS else "/"

    @property
    def panel(self) -> bool:
        return self.flavour is not Flavour.BOKEH


_MODULE_ATTR = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_IMPORTS_BOKEH = re.compile(r"^\s*(?:from\s+bokeh[\s.]|import\s+bokeh\b)", re.MULTILINE)
_USES_CURDOC = re.compile(r"\bcurdoc\s*\(")
_DEFINES_TORNADO_APP = re.compile(r"\bdef\s+make_app\s*\(|\bApplication\s*\(")
_IMPORTS_PANEL = re.compile(r"^\s*(?:from\s+panel[\s.]|import\s+panel\b)", re.MULTILINE)
_SERVABLE = re.compile(r"\.servable\s*\(")
_DEFINES_APPS = re.compile(r"^APPS\s*(?::[^=\n]*)?=(?!=)", re.MULTILINE)
_IMPORTS_TORNADO = re.compile(r"^\s*(?:from\s+tornado[\s.]|import\s+tornado\b)", re.MULTILINE)


def classify_source(source: str) -> AppKind:
    """Bokeh if the script imports bokeh and uses ``curdoc()`` and defines no Tornado app.

    A script that does not compile cannot be a Tornado app fleet could import; if it imports
    bokeh and not tornado it is a Bokeh script with a mistake (its ``curdoc()`` line may be the
    broken one), so Bokeh reports the error the way ``bokeh serve`` does.
    """
    if _IMPORTS_BOKEH.search(source) and _USES_CURDOC.search(source) and not _DEFINES_TORNADO_APP.search(source):
        return AppKind.BOKEH
    if _IMPORTS_BOKEH.search(source) and not _IMPORTS_TORNADO.search(source) \
            and not _DEFINES_TORNADO_APP.search(source) and syntax_error(source, "<app>") is not None:
        return AppKind.BOKEH
    return AppKind.TORNADO


def panel_flavour(source: str) -> Flavour | None:
    """Panel's flavour of a script's source, or None when it is no Panel app.

    A script that imports panel and calls ``.servable()`` (or ``curdoc()``) is a Panel script;
    one that imports panel, defines a module-level ``APPS`` and calls neither is a dict of apps.
    A Tornado app that happens to import panel stays a Tornado app.
    """
    if not _IMPORTS_PANEL.search(source) or _DEFINES_TORNADO_APP.search(source):
        return None
    if _DEFINES_APPS.search(source) and not _SERVABLE.search(source) and not _USES_CURDOC.search(source):
        return Flavour.PANEL_APPS
    return Flavour.PANEL


def syntax_error(source: str, filename: str) -> str | None:
    """Bokeh's words for a syntax error in ``source`` (``Invalid syntax in 'x.py' on line 3``,
    then the line), or None if it compiles. Compiles only: nothing runs."""
    try:
        compile(ast.parse(source, filename), filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:  # ValueError: a NUL byte in the source
        line = getattr(exc, "lineno", None) or "???"
        return f"Invalid syntax in {os.path.basename(filename)!r} on line {line}: {getattr(exc, 'msg', exc)}"
    return None


# IPython magics and shell escapes: Bokeh's notebook handler strips them before compiling.
_NOTEBOOK_MAGIC = re.compile(r"^\s*[%!]")


def _notebook_source(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        notebook = json.load(handle)
    cells = [cell.get("source", "") for cell in notebook.get("cells", []) if cell.get("cell_type") == "code"]
    lines = []
    for cell in cells:
        text = "".join(cell) if isinstance(cell, list) else str(cell)
        lines += ["" if _NOTEBOOK_MAGIC.match(line) else line for line in text.splitlines()]
    return "\n".join(lines) + "\n"


def compile_problem(spec: AppSpec) -> str | None:
    """What stops a Bokeh app before it runs (a file that does not compile), found without
    running any of it; None for a Tornado app or a Bokeh app that compiles.

    The master's view, for the start-up output and ``fleet status``: it reads the files as they
    are now. The worker's own check (Bokeh's handlers, ``fleet.worker.load``) decides what is
    served.
    """
    if spec.kind is not AppKind.BOKEH or spec.path is None:
        return None
    if os.path.isdir(spec.path):
        main = os.path.join(spec.path, "main.py")
        names = [main if os.path.isfile(main) else os.path.join(spec.path, "main.ipynb")]
        names += [os.path.join(spec.path, name) for name in ("app_hooks.py", "server_lifecycle.py", "__init__.py")
                  if os.path.isfile(os.path.join(spec.path, name))]
    else:
        names = [spec.path]
    for name in names:
        try:
            if name.endswith(".ipynb"):
                source = _notebook_source(name)
            else:
                with open(name, encoding="utf-8") as handle:
                    source = handle.read()
        except (OSError, ValueError, AttributeError) as exc:
            return f"cannot read {os.path.basename(name)!r}: {exc}"
        problem = syntax_error(source, name)
        if problem is not None:
            return problem
    return None


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
            return AppSpec(AppKind.BOKEH, path, None, None, name=name, flavour=_directory_flavour(path))
        raise AppError(f"APP directory {app!r} has no main.py (a Bokeh app directory needs one)")
    if not os.path.exists(path):
        raise AppError(
            f"APP not found: {app!r} (expected a .py file, a .ipynb notebook, a Bokeh app directory "
            f"or module:attr; arguments for the app go after --args)"
        )
    if path.endswith(".ipynb"):
        return AppSpec(AppKind.BOKEH, path, None, None, name=name,  # Bokeh's or Panel's NotebookHandler
                       flavour=_notebook_flavour(path))
    if not path.endswith(".py"):
        raise AppError(f"APP {app!r} is not a .py file, a .ipynb notebook, a directory or module:attr")
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            source = handle.read()
    except OSError as exc:
        raise AppError(f"cannot read APP {app!r}: {exc.strerror}") from None
    flavour = panel_flavour(source)
    if flavour is not None:
        return AppSpec(AppKind.BOKEH, path, None, None, name=name, flavour=flavour)
    return AppSpec(classify_source(source), path, None, None, name=name)


def _notebook_flavour(path: str) -> Flavour:
    """Panel if the notebook's code imports panel (read only; an unreadable one is Bokeh's to
    report)."""
    try:
        source = _notebook_source(path)
    except (OSError, ValueError, AttributeError):
        return Flavour.BOKEH
    return Flavour.PANEL if _IMPORTS_PANEL.search(source) else Flavour.BOKEH


def _directory_flavour(path: str) -> Flavour:
    main = os.path.join(path, "main.py")
    if not os.path.isfile(main):
        return _notebook_flavour(os.path.join(path, "main.ipynb"))
    try:
        with open(main, encoding="utf-8", errors="replace") as handle:
            source = handle.read()
    except OSError:
        return Flavour.BOKEH
    return Flavour.PANEL if _IMPORTS_PANEL.search(source) else Flavour.BOKEH


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


def broken_apps(specs: tuple[AppSpec, ...] | list[AppSpec]) -> dict[str, str]:
    """``{url path: problem}`` for the Bokeh apps that do not compile, when some others do (if
    none does, the workers fail to boot and say why). Compiled only: nothing runs."""
    problems = {spec.url_path: problem for spec in specs if (problem := compile_problem(spec)) is not None}
    return problems if len(problems) < len(specs) else {}
