//! The HTTP server: metrics endpoint, landing page, health, web-config (TLS, basic auth).
//! Serves bytes encoded elsewhere; never touches netlink.
