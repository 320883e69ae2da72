//! TODO(senml): being written
