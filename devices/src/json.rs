//! TODO(json): being written
