"""Figures drawn from stored records (CPU jobs; no torch).

style (figure, save, the expert-switch marker), figures (the run and group figure lists and their
render functions), run_figures, group_figures, helpers (steps, frames, labels, mosaics), masks,
curves (Chain-of-Steps score and divergence curves), seed_figures (the seed's file names).
"""
