"""`mto`: the command line. Typer lists and dispatches the stages; each stage hands every remaining
argument to Hydra's own runtime, so Hydra's whole command line works unchanged: `key=value`,
`+key=value`, `-m/--multirun` with comma sweeps, `--cfg job`, `--info`, `-cn`, `hydra.run.dir=...`,
launcher plugins, and `--help` for the stage's config.

Why not `hydra.compose`: it builds one config and cannot multirun, launch or write `.hydra/`. Why the
private `hydra._internal.utils._run_hydra`: it is what `@hydra.main` calls, with the arguments parsed by
us (the route NVIDIA NeMo takes); its signature is stable across 1.2-1.4.dev, hydra-core is pinned
`<1.4`, and tests/test_cli.py guards it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import typer

from mto.errors import MtoError, exit_report

app = typer.Typer(
    name="mto",
    help="Match Task to Objective: adapt, train and evaluate encoder-decoder LMs from configs.\n\n"
    "Each stage takes Hydra overrides and flags, e.g.\n"
    "`mto train model=t5-small template=mapping -m seed=1,2`; "
    "`mto <stage> --help` shows the stage's config groups.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from mto.info import version_text

        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version,
        help="Print mto's version, torch/transformers/peft versions and the device, then exit.",
    ),
) -> None:  # fmt: skip
    pass


# Every token after the stage name goes to Hydra, `--help` included.
HYDRA_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def run_hydra(config_name: str, task_function: Callable, argv: list[str]) -> None:
    """Run `task_function` under Hydra with `argv` as Hydra's command line."""
    from hydra._internal.utils import _run_hydra, get_args_parser

    from mto import world
    from mto.config import conf_dir
    from mto.resume import resume_overrides
    from mto.stages.launch import check_torchrun

    parser = get_args_parser()
    # parse_intermixed_args lets flags follow overrides (`template=a,b -m seed=1`, hydra issue 3053).
    args = parser.parse_intermixed_args(argv)
    # Errors come back to us instead of Hydra's traceback printer: ours are one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        # torchrun: every process runs this; rank 0 holds the run's lock (mto/stages/launch.py)
        args.overrides = resume_overrides(config_name, args.overrides, lock=not args.cfg and world.is_main())
        check_torchrun(args.overrides, args.multirun)  # before any run directory exists
        # `+key=...` may add keys Hydra cannot check: refused like any unknown key, before any run.
        added = any(o.lstrip("~").startswith("+") and not o.lstrip("+~").startswith("hydra")
                    for o in args.overrides)  # fmt: skip
        if (args.cfg or added) and not args.multirun:
            validate(config_name, args.overrides)
        _run_hydra(
            args=args,
            args_parser=parser,
            task_function=task_function,
            config_path=str(conf_dir()),
            config_name=config_name,
        )
    except Exception as err:
        fail(config_name, err)


def validate(config_name: str, overrides: list[str]) -> None:
    """Compose the config as the stage would and check every value (`--cfg` prints only what passes)."""
    from hydra import compose, initialize_config_dir

    from mto.config import conf_dir, typed

    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        typed(compose(config_name=config_name, overrides=overrides))


def fail(command: str, err: Exception) -> NoReturn:
    """End `mto <command>` with `err` as one message and its exit code (`mto.errors.exit_report`), or
    re-raise it when it is a bug."""
    report = exit_report(err)
    if report is None:
        raise err
    message, code = report
    from mto import world

    if world.is_main():  # under torchrun every process meets the same refusal: said once
        typer.echo(f"mto {command}: {message}", err=True)
    raise typer.Exit(code) from None


def _stage(name: str, config_name: str, module: str, help_text: str) -> None:
    def command(ctx: typer.Context) -> None:
        import importlib

        task_function = importlib.import_module(module).main
        run_hydra(config_name, task_function, list(ctx.args))

    command.__doc__ = help_text
    app.command(name=name, context_settings=HYDRA_PASSTHROUGH, add_help_option=False)(command)


STAGES = [  # (command, config name in conf/, module with the task function `main`, help)
    ("match", "match", "mto.stages.match",
     "Score mapping vs filling templates per relation and choose the objective (writes match.json)."),
    ("adapt", "adapt", "mto.stages.adapt",
     "Continue pre-training a model on a task's own text with the chosen objective."),
    ("train", "train", "mto.stages.train",
     "Fine-tune a model on a task with a template, then evaluate it (eval.after_train)."),
    ("eval", "eval", "mto.stages.eval",
     "Generate for a split and score it: exact match, ROUGE-L, BLEU, accuracy (run=<train run dir>)."),
    ("run", "pipeline", "mto.stages.pipeline",
     "The whole method: match -> adapt -> train -> eval, each stage in its own run directory."),
]  # fmt: skip
for _name, _config, _module, _help in STAGES:
    _stage(_name, _config, _module, _help)


@app.command("report")
def report_command(
    args: list[str] = typer.Argument(
        ..., help="Run or sweep directories, then by=a,b metric=m lines=k out=dir pool=true html=true mi=a,b"
    ),
) -> None:
    """Gather runs into one table (mean +- std over seeds), CSV, Markdown, PNG plots (html=true: HTML).

    Runs averaged together must differ only in the seed (pool=true: average them anyway, with a warning).
    Runs of a template and its masked twin with DepthRank figures add the maskability index against the
    few-shot size (mi=<mapping>,<filling> names the pair, mi=false leaves it out).
    """
    from mto.stages.report import report

    options = {"by": None, "metric": "rougeL", "out": None, "lines": None, "pool": "false", "html": "false",
               "mixed_protocols": "false", "check": None, "mi": None}  # fmt: skip
    paths = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in options:
            options[key] = value
        elif sep and not Path(arg).exists():
            expected = ", ".join(f"{k}=" for k in options)
            typer.echo(f"mto report: error: unknown option {key!r} (expected {expected})", err=True)
            raise typer.Exit(2)
        else:
            paths.append(arg)
    by = [k for k in options["by"].split(",") if k] if options["by"] else None
    lines = [k for k in options["lines"].split(",") if k] if options["lines"] else None
    flags = {}
    for name in ("pool", "html", "mixed_protocols"):
        value = options[name].lower()
        if value not in ("true", "false", "1", "0", "yes", "no"):
            typer.echo(f"mto report: error: {name}={options[name]}: expected true or false", err=True)
            raise typer.Exit(2)
        flags[name] = value in ("true", "1", "yes")
    if options["check"] is not None:  # check=match_run=<dir>: the chooser against the sweep's winners
        from mto.stages.check import check_match

        key, _, match_run = options["check"].partition("=")
        if key != "match_run" or not match_run:
            typer.echo("mto report: error: check= expects check=match_run=<match run dir>", err=True)
            raise typer.Exit(2)
        try:
            from mto.protocol import check_protocols

            check_protocols(paths, mixed=flags["mixed_protocols"])
            check_match(paths, match_run, metric=options["metric"], out=options["out"])
        except Exception as err:
            fail("report", err)
        return
    try:
        from mto.protocol import check_protocols

        check_protocols(paths, mixed=flags["mixed_protocols"])
        report(paths, by=by, metric=options["metric"], out=options["out"], lines=lines, pool=flags["pool"],
               html_page=flags["html"], mi=options["mi"])  # fmt: skip
    except Exception as err:
        fail("report", err)


template_app = typer.Typer(help="Preview templates.", no_args_is_help=True)
app.add_typer(template_app, name="template")


@template_app.command("show")
def template_show(
    overrides: list[str] = typer.Argument(None, help="Hydra overrides, e.g. template=prompting data=atomic"),
    n: int = typer.Option(5, "--n", "-n", help="How many examples to render."),
    split: str = typer.Option("train", help="Which split to take examples from."),
) -> None:
    """Print rendered (source, target) examples of a template on a task."""
    from hydra import compose, initialize_config_dir

    from mto.config import conf_dir
    from mto.stages.template import show

    # A preview writes nothing, so the compose API (one config, no run directory) is what fits here.
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            cfg = compose(config_name="train", overrides=list(overrides or []))
        show(cfg, n=n, split=split)
    except Exception as err:
        fail("template show", err)


@app.command("runs")
def runs_command(
    args: list[str] = typer.Argument(None, help="[DIR] (default: outputs), or: show RUN_DIR"),
    status: str = typer.Option(None, "--status", help="Only runs with this status (completed, failed, ...)."),
    stage: str = typer.Option(None, "--stage", help="Only runs of this stage (match, adapt, train, ...)."),
    limit: int = typer.Option(50, "--limit", help="Show at most this many runs (0: all)."),
) -> None:
    """List runs newest first: stage, status, start, duration, overrides, headline figure, lineage.

    `mto runs show RUN_DIR` prints one run: its config's differences from the stage's defaults, its
    figures and its files.
    """
    from mto.stages.listing import list_runs, show_run

    args = list(args or [])
    try:
        if args[:1] == ["show"]:
            if len(args) != 2:
                raise MtoError("show: expected one run directory (mto runs show <dir>)")
            show_run(args[1])
        elif len(args) > 1:
            raise MtoError(f"expected at most one folder, got {len(args)}: {' '.join(args)}")
        else:
            list_runs(args[0] if args else "outputs", status=status, stage=stage, limit=limit)
    except Exception as err:
        fail("runs", err)


@app.command("completion")
def completion_command(
    shell: str = typer.Argument(..., help="bash or zsh"),
) -> None:
    """Print a shell completion script: eval "$(mto completion bash)" in ~/.bashrc (zsh: ~/.zshrc).

    It completes commands, config groups and their options (`mto train tem<TAB>` -> `template=`,
    `template=<TAB>` -> the YAML names in conf/template/), config keys, and folders for run= and the like.
    """
    from mto.completion import SHELLS, script

    if shell not in SHELLS:
        typer.echo(f"mto completion: error: shell {shell!r}: expected one of {', '.join(SHELLS)}", err=True)
        raise typer.Exit(2)
    typer.echo(script(shell), nl=False)


@app.command("__complete", hidden=True)
def complete_command(
    shell: str = typer.Argument(...),
    words: list[str] = typer.Argument(None),
) -> None:
    """The candidates for the completion scripts (the words after `mto`, the last one being completed)."""
    from mto.completion import complete

    commands = [c.name for c in app.registered_commands if c.name and not c.hidden]
    commands += [g.name for g in app.registered_groups if g.name]
    for candidate in complete(shell, list(words or []), commands):
        typer.echo(candidate)


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="mto")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
