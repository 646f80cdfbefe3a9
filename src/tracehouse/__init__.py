"""tracehouse: a Python data plane for LLM traces, speaking Langfuse's wire protocols."""

__version__ = "0.1.0"
