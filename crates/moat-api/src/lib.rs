//! moat-api
