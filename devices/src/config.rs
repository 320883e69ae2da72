//! TODO(config): being written
