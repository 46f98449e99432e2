"""Hostile input against every consumer kind, sent by raw pika (a producer hutch did not write)."""
