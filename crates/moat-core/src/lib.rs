//! moat-core
