//! Integration tests against the real stores (see each module).

mod clickhouse;
