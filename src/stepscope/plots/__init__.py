"""Figures drawn from stored records (CPU jobs; no torch)."""
