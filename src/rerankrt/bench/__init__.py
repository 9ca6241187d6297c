"""Latency profiling, FLOP models and retrieval evaluation."""
