"""Probe runs: controlled perturbations of the sampling loop (noise at a step or frame, hidden-state
sensitivity, token swaps), one module per probe kind behind `probes.registry` (docs/probes.md)."""
