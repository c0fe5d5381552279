"""Training and evaluation: the paper's optimiser and protocol, exact resume, MLflow tracking."""
