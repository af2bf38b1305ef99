"""The names of Parity's own tables and SQL function, each defined once.

They live in the events table's schema (contract §4), beside every events table of that
schema; the migrations create them and every adapter refers to them by these names.
"""

FLAGS_TABLE = "feature_flags"
AUDIT_TABLE = "feature_flag_audit"
METRICS_TABLE = "delivery_metrics"
MIGRATIONS_TABLE = "parity_schema_migrations"
#: Every rollback decision, applied or dry run (migration 004); not part of the flag history.
DECISIONS_TABLE = "parity_rollback_decisions"
#: The one way a rollback decision is recorded (migration 004).
RECORD_DECISION_FUNCTION = "parity_record_rollback_decision"
#: The one way flags change (migration 003): compare-and-set, audited, one transaction.
SET_FLAGS_FUNCTION = "parity_set_flags"
#: The transaction-scoped advisory lock every flag write takes. Any constant works; it only
#: has to be the same for every Parity process (and the SQL function bakes it in).
FLAGS_LOCK_KEY = 0x5041524954590001
