"""What results mean: per-query metrics, paired significance, multiple testing, experiments, query perturbations."""
