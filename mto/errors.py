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
