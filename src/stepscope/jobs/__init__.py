"""The workflow's plan and the job functions its scripts call.

Plan (CPU, imported when Snakemake parses): workflow_plan (WorkflowPlan), sources, config_checks,
plan (batches, receipts, ResultsLayout), members. GPU jobs (import torch): runs, batches. CPU jobs
(never import torch): analysis_batch, analysis, manifest, failures, sharing batch_common.
"""
