"""Contracts: frozen pydantic models of every command, event, frame, body and error."""
