//! Prism's embedded TURN server and the TURN REST credentials it shares
//! with coturn (`use-auth-secret`).

pub mod rest;

pub use rest::{AuthFailure, RestCredentials, RestSecret};
