"""The exceptions the CLI turns into a one-line error and a non-zero exit: the user-facing family
(`MtoError`) and a training run stopped by a signal (`Interrupted`)."""


class MtoError(Exception):
    """A user-facing error: bad input, bad config, missing file. Message is one line."""


class DataError(MtoError):
    """A data file or split is missing, malformed or empty (message names file and line)."""


class ConfigError(MtoError):
    """A config value is missing or inconsistent (message names the key)."""


class Interrupted(Exception):
    """Training stopped on SIGTERM/SIGUSR1 after writing a checkpoint; the run can be resumed."""


def exit_report(err: BaseException, one_line: bool = False) -> tuple[str, int] | None:
    """How the command line reports `err` instead of a traceback: (message, exit code), the message to
    follow `mto <command>: `; None for any other exception (a bug: its traceback is worth seeing).

    - `MtoError`: `error: <message>`, exit 2; `Interrupted`: the same, exit 3 (the run can be resumed);
    - a Hydra or OmegaConf error: `config error: <message>` without their internals (type names, the
      config search path), with the OmegaConf error behind a Hydra one where the message leaves it out;
    - submitit's `FailedJobError` (the scheduler refused the submission): its lines joined, exit 2.

    `one_line` (an error of a running stage, whose full text its run's log keeps): `MtoError`,
    `Interrupted` and OmegaConf errors alike as `error: <the first line of the message>`.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException
    from submitit.core.utils import FailedJobError

    code = 3 if isinstance(err, Interrupted) else 2
    if one_line:
        if not isinstance(err, (MtoError, Interrupted, OmegaConfBaseException)):
            return None
        lines = str(err).strip().splitlines()
        return f"error: {lines[0] if lines else type(err).__name__}", code
    if isinstance(err, (MtoError, Interrupted)):
        return f"error: {err}", code
    if isinstance(err, (HydraException, OmegaConfBaseException)):
        message = str(err).strip()
        cause = err.__cause__
        if isinstance(cause, OmegaConfBaseException) and str(cause) not in message:
            message += f"\n{cause}"
        return f"config error: {_trim(message)}", 2
    if isinstance(err, FailedJobError):
        lines = " / ".join(line.strip() for line in str(err).strip().splitlines() if line.strip())
        return f"the scheduler refused the jobs: {lines}", 2
    return None


def _trim(message: str) -> str:
    """Hydra/OmegaConf messages without their internals (type names, search path dump)."""
    message = message.split("\nConfig search path:")[0]
    # Hydra's "To append to your config use +key=..." hint is left out: `+` adds no unknown key either.
    internals = ("reference_type=", "object_type=", "To append to your config use")
    keep = [ln for ln in message.splitlines() if not ln.strip().startswith(internals)]
    return "\n".join(keep).strip()
