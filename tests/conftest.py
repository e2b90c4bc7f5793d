"""Top-level pytest configuration. Area-specific fixtures live in each sub-folder's conftest."""
