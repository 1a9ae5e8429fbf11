"""The model registry: versioned models with tags, properties, aliases, lineage and search."""
