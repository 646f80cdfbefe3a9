"""Bulk export: scheduled, lossless export of traces, observations and scores to object storage."""
