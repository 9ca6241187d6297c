"""The bottom layer, imported by every other: the error types, optional-dependency imports, all-or-nothing
writes, the one JSON-manifest reader, package versions and progress. No numpy model code, no backend."""
