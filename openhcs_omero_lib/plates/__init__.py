"""Plates: their layout, the formats they come in (ImageXpress folders, synthetic plates) and virtual file names."""
