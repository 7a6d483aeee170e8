"""The lockstep sampling loop over a family's diffsynth units, the per-step capture of hidden states, step hooks and multi-seed ensembles (GPU jobs)."""
