"""Diagnosis: what a failure means, in words (signatures of well-known mistakes)."""
