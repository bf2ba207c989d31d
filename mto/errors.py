"""The one exception family the CLI turns into a one-line error and a non-zero exit."""


class MtoError(Exception):
    """A user-facing error: bad input, bad config, missing file. Message is one line."""


class DataError(MtoError):
    """A data file or split is missing, malformed or empty (message names file and line)."""


class ConfigError(MtoError):
    """A config value is missing or inconsistent (message names the key)."""
