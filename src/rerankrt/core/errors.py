"""Exceptions raised by rerankrt.

Every error names the input at fault, what was expected and what was found; callers can catch the
specific class or plain ``ValueError``.
"""


class InputError(ValueError):
    """A tensor or array handed to a model, backend or re-ranker has the wrong shape, dtype or values."""


class CheckpointError(ValueError):
    """A checkpoint file cannot be read, or does not fit the model it was given for."""


class DescriptorFileError(ValueError):
    """A descriptor, kNN or ground-truth file does not follow the official layout."""


class ModelFileError(ValueError):
    """An ONNX graph, engine or sidecar file is unreadable, corrupt or does not match its sidecar."""


class OutputError(ValueError):
    """A model returned NaN or infinite values for finite inputs (its weights, or FP16 overflow)."""


class QuantizationError(ValueError):
    """No INT8 graph keeps the FP32 graph's ranking on the calibration data (the message has the figures)."""


class TargetNotMetError(ValueError):
    """No first stage within the byte budget reaches the target recall (the message has the table)."""


class UnavailableError(RuntimeError):
    """A library, provider or device the caller asked for is not available on this machine."""


class ServerError(RuntimeError):
    """A Triton server did not start, or exited: the message carries the server's own error line."""
