"""Errors the lab raises on bad input. The CLI prints them as one line, never a traceback."""


class LabError(Exception):
    """Base class: a problem with the user's input, data or run directory (not a bug)."""


class ConfigError(LabError):
    """A recipe or an override names an unknown key or gives a value of the wrong type."""


class WorldDataError(LabError):
    """A Tiny World file is missing, corrupted or from another world version."""


class RunError(LabError):
    """A run directory is missing, is not a run, or cannot be resumed."""


class StoreError(LabError):
    """The lab store (lab.db) is not a lab store, or a record given to it is invalid."""


class DataError(LabError, ValueError):
    """An external data file (rlhf.data) cannot be read: the message names the file, the line or
    row (1-based) and the field."""
