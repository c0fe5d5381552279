"""Reports: the paper's tables and figures regenerated from MLflow (`rotrnn report`)."""
