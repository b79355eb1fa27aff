"""The one exception type that the command line turns into a clear message and exit code 2."""


class MtbertError(Exception):
    """A user-facing error: its message is one sentence naming the file, line or key at fault."""


class DataError(MtbertError):
    """A data file cannot be read (missing, unreadable, not UTF-8, or missing a column)."""


class ConfigError(MtbertError):
    """A configuration key is unknown or has a bad value."""
