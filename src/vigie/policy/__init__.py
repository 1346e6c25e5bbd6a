"""The policy: what may leave production, column by column, validated and compiled."""
