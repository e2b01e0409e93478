"""Orchestration only: one run, a comparison, the demo, reports. Library code never imports a recipe."""
