//! TODO(decode): being written
