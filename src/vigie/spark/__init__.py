"""Scale-out on Apache Spark: the same policy, masks, scan and pseudonyms as the DuckDB path,
writing an encrypted, partitioned Parquet dataset (a *lake*) instead of one DuckDB file.

``session`` starts or joins Spark; ``jdbc`` reads production in parallel; ``tasks`` is what
runs on the executors (vigie's own masks and detectors over Arrow batches); ``lake`` owns the
dataset's layout, encryption and one-machine reads; ``sync`` orchestrates a run.
"""
