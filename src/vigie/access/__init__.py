"""Who may do what: roles, actions, API keys (hashed, expiring) and the one decision."""
