//! seedgate's integration tests: one binary (it links once), a module per
//! behaviour, every test against real servers on loopback.

mod support;

mod engine;
mod gateway_http_origin;
mod plugin_sandbox;
