"""CLI commands: each module defines `command`, a click command or group."""
