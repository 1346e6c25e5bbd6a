"""Incident response: what was exposed, whose, for how long, and the rotation playbook."""
