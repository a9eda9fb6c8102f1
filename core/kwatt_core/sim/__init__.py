"""Trace-driven simulation and the benchmark that compares policies on it."""
