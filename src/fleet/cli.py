"""The ``fleet`` command: a thin click adapter over ``fleet.config`` and the runners.

Options are generated from ``Config`` field metadata (one declaration per option, in its
section); click only collects what was typed, ``build_config`` merges it with the environment
and ``fleet.toml``. ``--help`` lists the options section by section (``cli_command``).
Heavy imports (tornado, the proxy) happen inside the commands so ``fleet --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from typing import Any, Callable

import click
from click.core import ParameterSource

from fleet import __version__
from fleet.config import (
    Config,
    ConfigError,
    build_config,
    load_toml,
    option_fields,
    parse_port,
    parse_positive_int,
)
from fleet.cli_command import AppCommand, SectionedCommand
from fleet.config.reference import shown_default

_METAVARS = {parse_port: "PORT", parse_positive_int: "N"}

CONFIG_KINDS = ("nginx", "apache", "haproxy", "systemd", "kubernetes")


def _config_options(command: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command with every Config option that belongs to it, plus --config."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for f in reversed(option_fields()):
            meta = f.metadata
            if command not in meta["commands"]:
                continue
            shown = shown_default(f)
            help_text = meta["help"]
            if shown is not None:
                help_text += f"  [default: {shown}]"
            help_text += f"  [env: FLEET_{f.name.upper()}]"
            kwargs: dict[str, Any] = {"help": help_text, "default": None}
            if meta["is_flag"]:
                kwargs["is_flag"] = True
            if meta["multiple"]:
                kwargs["multiple"] = True
                kwargs["default"] = ()
            metavar = meta["metavar"] or _METAVARS.get(meta["parse"])
            if metavar:
                kwargs["metavar"] = metavar
            func = click.option(*meta["flags"], f.name, **kwargs)(func)
        func = click.option(
            "--config", "config_file", metavar="PATH", default=None,
            help="Settings file  [default: ./fleet.toml when present]  [env: FLEET_CONFIG]",
        )(func)
        return func

    return decorate


def _make_config(ctx: click.Context, command: str, **positional: Any) -> Config:
    typed = {
        name: value
        for name, value in ctx.params.items()
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    }
    config_file = ctx.params.get("config_file") or os.environ.get("FLEET_CONFIG")
    if command in {"up", "check"}:  # fleet reload builds it again from the same sources
        from fleet.config.source import ConfigSource

        typed.pop("config_file", None)
        ctx.meta["fleet.source"] = ConfigSource.of(
            typed, os.environ, config_file, positional.get("app") or (), positional.get("app_args") or ())
    try:
        toml = load_toml(config_file, explicit=config_file is not None)
        ctx.meta["fleet.toml"] = toml
        config = build_config(typed, os.environ, toml, command=command, **positional)
    except ConfigError as exc:
        if command != "reload":
            raise click.UsageError(str(exc), ctx) from None
        # The running fleet reads the file too, and refuses it with this same message: still
        # find the fleet (by the command line and environment) so that it can say so.
        try:
            config = build_config(typed, os.environ, {}, command=command)
        except ConfigError:
            raise click.UsageError(str(exc), ctx) from None
    if command == "up" and config.supervisor.app and not config.supervisor.cmd:
        from fleet.bokeh_settings import with_run_secrets

        config, warnings = with_run_secrets(config, os.environ)
        for warning in warnings:
            click.echo(f"fleet | warning: {warning}", err=True)
    if config.bokeh.cookie_secret and command != "config":
        click.echo("fleet | warning: --cookie-secret on the command line shows in `ps`; set "
                   "BOKEH_COOKIE_SECRET in the environment instead (workers get it only there).", err=True)
    if config.trust.use_xheaders and command != "config":
        click.echo("fleet | warning: --use-xheaders is deprecated; it now trusts the forwarding headers "
                   "of loopback and private-network peers only. Name your proxies with --trusted-proxy "
                   "CIDR instead.", err=True)
    return config


class FleetGroup(click.Group):
    command_class = SectionedCommand


@click.group(cls=FleetGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fleet")
def main() -> None:
    """Run a Python web app as a self-healing, load-balanced cluster on one machine.

    \b
      fleet up myapp.py -n 3      3 workers on 5100-5102 behind a proxy on :5006
      fleet status                what the workers are doing
      fleet reload                new code, and the changes of fleet.toml, with no failed request
      fleet check                 validate fleet.toml and options without a running fleet
      fleet upgrade               run the newly installed fleet, keeping workers and connections
      fleet ls                    the running fleets of this user
      fleet logs w1 -f            a worker's recent and new output
      fleet config nginx          the equivalent nginx configuration
    """


@main.command(cls=AppCommand, context_settings={"ignore_unknown_options": False})
@click.argument("app", nargs=-1, metavar="APP... [--args ARGS...]")
@_config_options("up")
@click.pass_context
def up(ctx: click.Context, app: tuple[str, ...], app_args: tuple[str, ...] = (), **_: Any) -> None:
    """Start the workers of APP and the proxy in front of them.

    APP is a Bokeh app script, directory or notebook (several may be given, like `bokeh
    serve a.py b/ c.ipynb`: each at /<name> under --prefix), a Python file or module:attr
    providing a tornado.web.Application (or make_app()), or use --cmd for any server
    command. Everything after --args (or --) goes to the app(s) as sys.argv[1:].
    """
    config = _make_config(ctx, "up", app=app, app_args=app_args)
    from fleet.runner import run_up

    sys.exit(run_up(config, ctx.meta["fleet.source"]))


@main.command(cls=AppCommand, context_settings={"ignore_unknown_options": False})
@click.argument("app", nargs=-1, metavar="[APP...] [--args ARGS...]")
@_config_options("up")
@click.pass_context
def check(ctx: click.Context, app: tuple[str, ...], app_args: tuple[str, ...] = (), **_: Any) -> None:
    """Validate a configuration as `fleet up` would, without a running fleet (like nginx -t).

    Takes the options of `fleet up`; reads ./fleet.toml or --config FILE. Exit 0 with a
    summary, or 1 with the message `fleet up` would give.
    """
    try:
        config = _make_config(ctx, "up", app=app, app_args=app_args)
    except click.UsageError as exc:
        click.echo(f"fleet check: {exc.message}", err=True)
        sys.exit(1)
    from fleet.appspec import AppError, detect_apps
    from fleet.bokeh_settings import app_paths

    what = f"--cmd {config.cmd!r}"
    if config.cmd is None:
        try:
            specs = detect_apps(app_paths(config.supervisor, config.bokeh))
        except (AppError, ConfigError) as exc:
            click.echo(f"fleet check: {exc}", err=True)
            sys.exit(1)
        what = ", ".join(f"{spec.name} ({spec.kind.value} app)" for spec in specs)
    if not config.no_proxy and config.proxy in {"nginx", "haproxy"}:  # nginx -t, haproxy -c
        from fleet.dataplane.plane import DataPlane

        refused = asyncio.run(DataPlane.check_offline(config))
        if refused:
            click.echo(f"fleet check: --proxy {config.proxy}: {refused}", err=True)
            sys.exit(1)
    source = ctx.meta["fleet.source"]
    found = os.path.exists(source.toml_path)
    click.echo(f"configuration OK: {source.toml_path if found else 'no fleet.toml'}; "
               f"{config.workers} workers of {what}; proxy "
               f"{'none' if config.no_proxy else config.proxy} on {config.address}:{config.port}")


@main.command()
@click.argument("servers", nargs=-1, metavar="[HOST:PORT...]")
@_config_options("balance")
@click.pass_context
def balance(ctx: click.Context, servers: tuple[str, ...], **_: Any) -> None:
    """Run only the proxy, in front of servers fleet does not run, or of fleets on several hosts."""
    from fleet.config import parse_hostport

    try:
        targets = tuple(parse_hostport(server) for server in servers)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="HOST:PORT") from None
    config = _make_config(ctx, "balance")
    if not config.resolve and not config.by_host:
        if not targets:
            raise click.UsageError("give HOST:PORT... or --resolve NAME:PORT", ctx)
        from fleet.balancer.standalone import run_balance

        sys.exit(run_balance(config, targets))
    from fleet.balance.cliargs import hosts_arguments
    from fleet.balance.front import run_hosts

    try:
        static, resolvers, bounds = hosts_arguments(targets, config)
    except ValueError as exc:
        raise click.UsageError(str(exc), ctx) from None
    sys.exit(run_hosts(config, static, config.resolve, resolvers, bounds))


@main.command("config", cls=AppCommand)
@click.argument("kind", type=click.Choice(CONFIG_KINDS))
@click.argument("app", nargs=-1, metavar="APP... [--args ARGS...]")
@click.option("-o", "--output", metavar="FILE", default=None, help="Write to FILE instead of stdout.")
@_config_options("config")
@click.pass_context
def config_cmd(
    ctx: click.Context, kind: str, app: tuple[str, ...], output: str | None,
    app_args: tuple[str, ...] = (), **_: Any
) -> None:
    """Print the nginx/Apache/HAProxy/systemd/Kubernetes configuration equivalent to `fleet up`."""
    config = _make_config(ctx, "config", app=app, app_args=app_args)
    from fleet.configgen import render

    text = render(kind, config)
    if output:
        with open(output, "w") as handle:
            handle.write(text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


def _port_selected(ctx: click.Context) -> bool:
    """A port names a fleet when it was given: on the command line, in $FLEET_PORT or fleet.toml."""
    return (ctx.get_parameter_source("port") == ParameterSource.COMMANDLINE
            or "FLEET_PORT" in os.environ or "port" in ctx.meta.get("fleet.toml", {}))


def _socket_of(ctx: click.Context, command: str, config: Config) -> str:
    from fleet.control import ControlError
    from fleet.discovery import find_socket

    try:
        return find_socket(config.operations.control_socket, config.operations.name,
                           config.frontend.port if _port_selected(ctx) else None)
    except ControlError as exc:
        click.echo(f"fleet {command}: {exc}", err=True)
        sys.exit(1)


def _control(ctx: click.Context, command: str, **args: Any) -> Any:
    config = _make_config(ctx, command)
    from fleet.control import ControlError, request

    path = _socket_of(ctx, command, config)
    try:
        return request(path, command, **args)
    except ControlError as exc:
        click.echo(f"fleet {command}: {exc}", err=True)
        sys.exit(1)


@main.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ls(as_json: bool) -> None:
    """List the running fleets of this user: name, pid, port, app, workers, uptime."""
    from fleet.control import ControlError
    from fleet.discovery import check_private, runtime_dir, scan
    from fleet.fleetlist import format_fleets

    directory = runtime_dir()
    try:
        if os.path.lexists(directory):
            check_private(directory)
        found = scan(directory)
    except ControlError as exc:
        click.echo(f"fleet ls: {exc}", err=True)
        sys.exit(1)
    for path in found.removed:
        click.echo(f"fleet ls: removed stale socket {path}", err=True)
    for path in found.unreachable:
        click.echo(f"fleet ls: no answer from {path} (starting, busy or an older fleet)", err=True)
    if as_json:
        click.echo(json.dumps({"directory": directory,
                               "fleets": [entry.__dict__ for entry in found.fleets]}, indent=2))
    elif not found.fleets:
        click.echo(f"no fleet running (looked in {directory})")
    else:
        click.echo(format_fleets(found.fleets))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_config_options("status")
@click.pass_context
def status(ctx: click.Context, as_json: bool, **_: Any) -> None:
    """Show each worker: id, pid, port, state, uptime, restarts, connections, requests, cpu, rss."""
    reply = _control(ctx, "status")
    if as_json:
        click.echo(json.dumps(reply, indent=2))
        return
    from fleet.control import format_status

    click.echo(format_status(reply))


@main.command()
@_config_options("reload")
@click.pass_context
def reload(ctx: click.Context, **_: Any) -> None:
    """Start a new generation of workers and drain the old one, with no failed request.

    \b
    Behind the built-in proxy: the new workers start on the other port block
    (--base-port / --surge-base-port), --reload-batch at a time, and take new traffic as
    soon as each is ready; this command returns once all are ready. The old workers drain
    in the background: no new clients, pinned clients (affinity cookie, open WebSockets)
    keep them until their connections end or --drain-timeout passes. If the new generation
    cannot start, the old one keeps serving and this command exits 1.
    With --no-proxy: each worker is restarted in turn on its own port.
    A reload also re-reads the fleet.toml the fleet was started with (validated first: an
    invalid one is refused and nothing changes) and prints each change and how it was applied
    (in place, new generation, scaling, or not possible live). Options given to `fleet up` on
    its command line or in its environment keep their values: the file changes the rest.
    """
    reply = _control(ctx, "reload")
    click.echo(reply.get("message", "reloading"))


@main.command()
@_config_options("reload")
@click.pass_context
def upgrade(ctx: click.Context, **_: Any) -> None:
    """Run the newly installed fleet in the running fleet: same workers, connections kept.

    The new code is checked first (imports, configuration); if it cannot start, the running
    fleet serves on and this exits 1 with the reason. See the README, "Changing a running fleet".
    """
    from fleet.upgrade.client import follow

    from fleet.control import ControlError, request

    path = _socket_of(ctx, "upgrade", _make_config(ctx, "reload"))
    try:
        reply = request(path, "upgrade")
    except ControlError as exc:
        sys.exit(click.echo(f"fleet upgrade: {exc}", err=True) or 1)
    click.echo(reply.get("message", "upgrading"))
    sys.exit(follow(path, float(reply.get("requested_at", 0)), click.echo))


@main.command()
@click.argument("workers", type=click.IntRange(min=1))
@_config_options("scale")
@click.pass_context
def scale(ctx: click.Context, workers: int, **_: Any) -> None:
    """Change the number of workers of the running fleet."""
    reply = _control(ctx, "scale", workers=workers)
    click.echo(reply.get("message", f"scaling to {workers}"))


@main.command()
@_config_options("down")
@click.pass_context
def down(ctx: click.Context, **_: Any) -> None:
    """Gracefully stop the running fleet."""
    reply = _control(ctx, "down")
    click.echo(reply.get("message", "stopping"))


@main.command()
@click.argument("worker", required=False)
@click.option("-n", "--lines", type=click.IntRange(min=0), default=100, show_default=True,
              help="How many of the last lines to show.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@_config_options("logs")
@click.pass_context
def logs(ctx: click.Context, worker: str | None, lines: int, follow: bool, **_: Any) -> None:
    """Recent output of the running fleet's workers (of WORKER only, e.g. w1; `fleet` for fleet's
    own lines), kept in memory by fleet: works from any directory, without --log-dir."""
    import time

    from fleet.control import ControlError, request

    config = _make_config(ctx, "logs")
    path = _socket_of(ctx, "logs", config)
    args: dict[str, Any] = {"lines": lines} if worker is None else {"lines": lines, "worker": worker}
    after = 0
    try:
        while True:
            try:
                reply = request(path, "logs", timeout=15.0, after=after, **args)
            except ControlError as exc:
                if follow and after:
                    click.echo(f"fleet logs: fleet stopped ({exc})", err=True)
                    return
                click.echo(f"fleet logs: {exc}", err=True)
                sys.exit(1)
            for entry in reply["lines"]:
                click.echo(entry["text"])
            after = int(reply["last"])
            if not follow:
                return
            args["lines"] = 5000  # everything new since the last poll (the fleet caps it too)
            time.sleep(0.5)
    except KeyboardInterrupt:
        return


@main.command()
def secret() -> None:
    """Print a new random secret (for BOKEH_SECRET_KEY and signed sessions)."""
    click.echo(secrets.token_urlsafe(32))


if __name__ == "__main__":  # pragma: no cover
    main()
