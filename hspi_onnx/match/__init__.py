"""Suspect readers, evidence and verdicts, claims."""
