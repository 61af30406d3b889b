"""The audit trail: append-only, hash-chained events, one per change, recorded by the services."""
