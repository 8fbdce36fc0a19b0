"""dropout-sweep: Optuna sweeps, MLflow curves and ablations on the numpy model."""
