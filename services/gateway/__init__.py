"""Gateway: the only public door. HTTP API, WebSocket sessions, fan-out of events."""
