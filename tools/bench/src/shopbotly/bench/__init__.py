"""make bench: benchmarks measured as ratios against baselines run side by side."""
