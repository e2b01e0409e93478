"""The transfer plan: the four cases as rules, applying a plan to a model, conservative training."""
