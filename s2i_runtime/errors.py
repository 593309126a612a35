"""Exceptions the runtime raises on purpose; anything else is a bug."""


class S2IError(Exception):
    """Base class for errors that carry a message meant for the user."""


class InputError(S2IError, ValueError):
    """The caller's input (audio, arguments) cannot be used. CLIs exit with 2."""


class BundleError(S2IError, ValueError):
    """A model bundle is missing, corrupt, or does not match its s2i.json. CLIs exit with 2."""


class BackendUnavailable(S2IError, RuntimeError):
    """A requested backend or device cannot run on this machine."""


class PipelineClosed(S2IError, RuntimeError):
    """A Pipeline was used after close()."""


class InternalError(S2IError, RuntimeError):
    """An unexpected exception while processing one input: a bug, reported for that input alone so the
    other inputs of the call still get their images. CLIs exit with 1."""
