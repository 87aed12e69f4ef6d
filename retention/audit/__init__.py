"""The audit trail: append-only, hash-chained, signed, free of personal data. No business logic."""
