//! TODO(ledger): being written
