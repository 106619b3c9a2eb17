"""Early-stopping sidecar: SageMaker's median stopping rule for tuning jobs, run anywhere."""

__version__ = "0.1.0"
