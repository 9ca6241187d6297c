"""Exceptions raised by rerankrt.

Every error names the input at fault, what was expected and what was found; callers can catch the
specific class or the builtin it extends (``ValueError``, ``FileExistsError``, ``RuntimeError``).

An error about one parameter carries its name in `param` (the message then starts with it), and a hint
inside a message names another parameter in backquotes (`` `force` ``). So the library speaks in its own
parameters, and the command line alone turns both into the flags that set them (`rerankrt.core.flags`).
"""


class Error(Exception):
    """Base of rerankrt's errors; `param`: the parameter at fault, where one is; `detail`: the message
    without it."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(f"{param}: {message}" if param else message)
        self.param, self.detail = param, message


class InputError(Error, ValueError):
    """A tensor, array or value handed to a model, backend, re-ranker or builder has the wrong shape, dtype or
    values."""


class CheckpointError(Error, ValueError):
    """A checkpoint file cannot be read, or does not fit the model it was given for."""


class DescriptorFileError(Error, ValueError):
    """A descriptor, kNN or ground-truth file does not follow the official layout."""


class ModelFileError(Error, ValueError):
    """An ONNX graph, engine or sidecar file is unreadable, corrupt or does not match its sidecar."""


class OutputError(Error, ValueError):
    """A model returned NaN or infinite values for finite inputs (its weights, or FP16 overflow)."""


class OutputExistsError(Error, FileExistsError):
    """What a command would write exists, and replacing it was not asked for (or it is not ours to replace)."""


class OutputPathError(Error, OSError):
    """An output path cannot be written: a file where a folder is expected, or a folder that is not writable."""


class QuantizationError(Error, ValueError):
    """No INT8 graph keeps the FP32 graph's ranking on the calibration data (the message has the figures)."""


class TargetNotMetError(Error, ValueError):
    """No first stage within the byte budget reaches the target recall (the message has the table)."""


class UnavailableError(Error, RuntimeError):
    """A library, provider, port or device the caller asked for is not available on this machine."""


class ServerError(Error, RuntimeError):
    """A Triton server did not start, or exited: the message carries the server's own error line."""
