"""Sub-commands of ``scrubin``: one module each, exposing ``register(subparsers)``."""
