"""Analytics stores: DuckDB (encrypted at rest) today."""
