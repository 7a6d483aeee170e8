"""Model families: one adapter per diffsynth pipeline (contract in adapter.py, registry in registry.py), their weight layouts, loading, LoRAs and tiny twins."""
