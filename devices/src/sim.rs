//! TODO(sim): being written
