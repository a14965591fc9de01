"""Messaging: owns sessions, participants and messages as an event-sourced store in Postgres."""
