"""Plates: their layout, the formats they come in (ImageXpress folders, synthetic plates), how
their pixels are read (pixel sources), and virtual file names."""
