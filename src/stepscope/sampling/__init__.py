"""The lockstep sampling loop over a family's diffsynth units, the step context it publishes to block hooks, the per-step capture of hidden states, step hooks and multi-seed ensembles (GPU jobs)."""
