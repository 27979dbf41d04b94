"""Agents: triage, analysis (script author) and summary, each over a ChatModel."""
