"""End-to-end workflows behind the command line (they join the stage packages)."""
