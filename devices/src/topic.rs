//! TODO(topic): being written
