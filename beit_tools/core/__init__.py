"""Core: everything below the CLI, importable and testable without it."""
