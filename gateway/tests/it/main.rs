//! Gateway integration tests against real servers started per test.

mod tls;
