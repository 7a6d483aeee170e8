"""Scores, Chain-of-Steps metrics and result tables computed from stored records (CPU jobs; no torch).

scoring (the scorer registry and CLI), score_table (the tidy table), proxy_scorer, evalkit,
chain_of_steps (curve metrics, divergence), tables, validation.
"""
