"""unlearnkit: sequential machine unlearning for language models, measured against a retrain oracle."""

from unlearnkit.errors import UnlearnkitError

__version__ = "0.1.0"
__all__ = ["UnlearnkitError", "__version__"]
