"""The `vigie` command line: thin commands over the library core."""
