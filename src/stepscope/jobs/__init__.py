"""The workflow's plan (runs, batches, receipts) and the job functions its scripts call."""
