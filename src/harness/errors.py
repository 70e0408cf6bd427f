"""Errors that are the user's to fix, reported as one paragraph instead of a traceback."""


class UserError(Exception):
    """A problem with the configuration, the data on disk or the environment.

    Raised before training starts; the entry points print its message and exit non-zero.
    """


class ConfigError(UserError):
    """The composed configuration asks for something that cannot work."""


class DataUnavailableError(UserError):
    """A data set is missing locally and cannot be downloaded."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the run stops before saving the bad weights."""
