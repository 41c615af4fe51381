"""The click command classes of ``fleet``: ``--help`` grouped by config section, and
``APP... [--args ARGS...]`` read as ``bokeh serve`` reads it (``fleet.cli_grammar``)."""

from __future__ import annotations

import click

from fleet.config.reference import group_by_section

# The widest option column of --help (click's own limit): wider terms put their help below.
_TERM_WIDTH = 30


class SectionedCommand(click.Command):
    """A command whose ``--help`` lists its settings under one heading per section, like
    gunicorn's settings reference; the command's own options (``--json``, ``--config``,
    ``--help``, ...) come first, under "Options"."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and not isinstance(param, click.Argument):  # as click's own
                records.append((param.name or "", record))
        if not records:
            return
        width = min(max(len(term) for _, (term, _) in records), _TERM_WIDTH)
        own, sections = group_by_section(
            (name, (term.ljust(width), text)) for name, (term, text) in records)
        for title, rows in [("Options", own), *((section.title, rows) for section, rows in sections)]:
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows, col_max=_TERM_WIDTH)


class AppCommand(SectionedCommand):
    """``APP... [--args ARGS...]`` as ``bokeh serve`` reads it (``fleet.cli_grammar``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        from fleet.cli_grammar import NotApplicable, expand_multi_value, refuse_not_applicable, split_app_args

        own, app_args = split_app_args(args)
        try:
            refuse_not_applicable(own)
        except NotApplicable as exc:
            raise click.UsageError(str(exc), ctx) from None
        rest = super().parse_args(ctx, expand_multi_value(own))
        ctx.params["app_args"] = tuple(app_args)
        return rest


__all__ = ["AppCommand", "SectionedCommand"]
