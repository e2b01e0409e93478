"""Which case, cut and plan suit a target: transferability scores, depth probes and the decision."""
