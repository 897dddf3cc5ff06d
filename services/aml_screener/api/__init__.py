"""The pre-screen API: synchronous screening over HTTP with the stream's own code (docs/api.md)."""
