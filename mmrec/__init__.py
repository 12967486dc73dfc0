"""mmrec: a workflow-orchestrated MLOps platform for multimodal recommendation.

The package imports nothing heavy at import time; torch, great_expectations, mlflow and feast
are imported inside the functions that need them.
"""

__version__ = "0.1.0"

from mmrec.errors import MMRecError  # cheap, and the one thing every caller needs

__all__ = ["MMRecError", "__version__"]
