"""The training loop and what it leans on: checkpoints, guards, metrics, throughput, devices, the feature cache."""
