"""User-facing errors: raised for bad input before any expensive work starts."""


class MgkdError(Exception):
    """An error the user can fix; the message names the problem and the fix."""


class ConfigError(MgkdError, ValueError):
    """A config key, name or value is invalid."""


class DataError(MgkdError):
    """A data set is missing or malformed."""


class TrainingDiverged(MgkdError):
    """The loss became NaN or infinite."""
