"""Language-model port and its adapters (offline rules model; OpenAI-compatible later)."""
