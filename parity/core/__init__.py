"""The pure core: events and checksums, classification, cohorts, reconciliation and the
decisions. No Dagster, no network, no database."""
