"""Local stand-ins, at the wire, for external services the bot talks to (tests and walk-throughs)."""
