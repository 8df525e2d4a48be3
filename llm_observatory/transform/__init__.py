"""What the backfill and the sync both do to rows: deduplicate, route to silver or quarantine,
summarise into gold's metrics. One home each, so the two paths cannot drift apart."""
