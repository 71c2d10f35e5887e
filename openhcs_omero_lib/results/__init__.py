"""Results: per-field and per-well tables, and the local sink that writes them."""
