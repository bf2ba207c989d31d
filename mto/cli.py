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

import typer

from mto.errors import MtoError

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

# Every token after the stage name goes to Hydra, `--help` included.
HYDRA_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def run_hydra(config_name: str, task_function: Callable, argv: list[str]) -> None:
    """Run `task_function` under Hydra with `argv` as Hydra's command line."""
    from hydra._internal.utils import _run_hydra, get_args_parser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from mto.config import conf_dir

    parser = get_args_parser()
    # parse_intermixed_args lets flags follow overrides (`template=a,b -m seed=1`, hydra issue 3053).
    args = parser.parse_intermixed_args(argv)
    # Errors come back to us instead of Hydra's traceback printer: ours are one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _run_hydra(
            args=args,
            args_parser=parser,
            task_function=task_function,
            config_path=str(conf_dir()),
            config_name=config_name,
        )
    except MtoError as err:
        typer.echo(f"mto {config_name}: error: {err}", err=True)
        raise typer.Exit(2) from None
    except (HydraException, OmegaConfBaseException) as err:
        message = str(err).strip()
        cause = err.__cause__
        if isinstance(cause, OmegaConfBaseException) and str(cause) not in message:
            message += f"\n{cause}"
        typer.echo(f"mto {config_name}: config error: {_trim(message)}", err=True)
        raise typer.Exit(2) from None


def _trim(message: str) -> str:
    """Hydra/OmegaConf messages without their internals (type names, search path dump)."""
    message = message.split("\nConfig search path:")[0]
    keep = [
        ln for ln in message.splitlines() if not ln.strip().startswith(("reference_type=", "object_type="))
    ]
    return "\n".join(keep).strip()


def _stage(name: str, config_name: str, module: str, help_text: str) -> None:
    def command(ctx: typer.Context) -> None:
        import importlib

        task_function = importlib.import_module(module).main
        run_hydra(config_name, task_function, list(ctx.args))

    command.__doc__ = help_text
    app.command(name=name, context_settings=HYDRA_PASSTHROUGH, add_help_option=False)(command)


_stage(
    "adapt",
    "adapt",
    "mto.stages.adapt",
    "Continue pre-training a model on a task's own text with the chosen objective.",
)
_stage(
    "train",
    "train",
    "mto.stages.train",
    "Fine-tune a model on a task with a template, then evaluate it (eval.after_train).",
)
_stage(
    "eval",
    "eval",
    "mto.stages.eval",
    "Generate for a split and score it: exact match, ROUGE-L, BLEU (run=<train run dir>).",
)


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="mto")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
