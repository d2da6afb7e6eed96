"""Errors a user can cause. Each message is one sentence: what was wrong and how to fix it.

The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""


class TDSMError(Exception):
    """Base class of every error caused by user input (paths, data, configs, encoders)."""


class ConfigError(TDSMError, ValueError):
    """A config file or override is wrong."""


class DataError(TDSMError, ValueError):
    """A data file (features, labels, splits, class prompts) is missing or inconsistent."""


class TextEncoderError(TDSMError, OSError):
    """A text encoder cannot be loaded or gives features of the wrong shape."""


class CheckpointError(TDSMError, ValueError):
    """A checkpoint is missing, corrupt or does not match the config."""


class TrainingError(TDSMError, FloatingPointError):
    """Training diverged (the loss became NaN or infinite)."""


class FileAccessError(TDSMError, OSError):
    """A file or folder the user named cannot be read or written (missing, a folder where a file belongs,
    no permission, not UTF-8 text)."""


class DiskFullError(FileAccessError):
    """The disk filled up while a result was being written (the previous version of the file is kept)."""
