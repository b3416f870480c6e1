"""Processors (and connectors): transform, filter and route batches between receivers and exporters."""
