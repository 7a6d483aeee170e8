"""Scores, Chain-of-Steps metrics and result tables computed from stored records (CPU jobs; no torch)."""
