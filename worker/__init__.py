"""Agent-hints worker: learns LLM routing hints for AI agents from their run records."""

__version__ = "0.1.0"
