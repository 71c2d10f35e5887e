"""Built-in pipeline specs, one YAML file each."""

from importlib import resources


def names() -> list[str]:
    """Preset names, without importing the spec machinery (cheap for script dialogs)."""
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))
