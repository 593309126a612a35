"""s2i runtime: WAV in, images out. A leaf package: never imports torch, s2i_train or s2i_export."""

from .errors import BackendUnavailable, BundleError, InputError, S2IError

__version__ = "0.1.0"
__all__ = ["BackendUnavailable", "BundleError", "InputError", "Pipeline", "S2IError", "__version__"]


def __getattr__(name: str):
    # The pipeline pulls in onnxruntime; keep `import s2i_runtime` cheap for the front end alone.
    if name == "Pipeline":
        from .pipeline import Pipeline

        return Pipeline
    raise AttributeError(f"module 's2i_runtime' has no attribute {name!r}")
