"""The guard: checks from the inside and probes from the outside that nothing is exposed,
fail closed on any doubt, and a two-person rule for lowering security."""
