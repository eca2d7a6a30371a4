"""ocean-hook: webhooks in, Port catalog changes out, through one pipeline."""

__version__ = "0.1.0"
