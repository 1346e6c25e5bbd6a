"""KPIs: declared metrics over the store, a query compiler, rollups, small-cell suppression."""
