"""Diagnosis: live checks, log signatures, and drift of a deployed env against its lock."""
