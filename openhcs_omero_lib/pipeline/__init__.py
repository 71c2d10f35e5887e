"""Pipelines: validated, declarative specs of whitelisted steps, their presets and parameters,
and computing one unit of work with them."""
