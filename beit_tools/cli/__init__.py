"""Typer command-line interface; thin wrappers over `beit_tools.core`."""
