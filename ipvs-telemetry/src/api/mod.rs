//! The JSON side: the versioned documents shared by `snapshot --format json` and the daemon's
//! read-only JSON API ([`schema`], `docs/api.schema.json`).

pub mod routes;
pub mod schema;
pub mod window;
