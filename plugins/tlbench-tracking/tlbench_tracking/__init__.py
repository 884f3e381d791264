"""tlbench trackers: TensorBoard event files and an MLflow tracking store, one run per trial."""
