"""Exporters: deliver batches to backends, each behind the shared queue and retry helper."""
