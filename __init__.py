"""sysplan: plan and auto-tune parallel configurations for large-model training and serving."""

__version__ = "0.1.0"
