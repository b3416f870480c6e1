"""Receivers: take data in (OTLP gRPC and HTTP, ...) and push it into the pipelines."""
