//! Just-in-time access: grants (destinations opened for an identity, or one of its
//! tasks, until a deadline), requests raised by `ask` rules and their decisions, the
//! windows of `when` rules, and `why`.
//!
//! By job: `model` (grants, requests, scopes), `store` (the SQLite database in the
//! state dir), `entries` (allowances to grant-trie entries, pure), `window` (time
//! windows in IANA zones), `view` (the policy's `ask`/`when` rules, and the names the
//! resolver may answer through grants), `manager` (the daemon part that owns it all),
//! `control` (the control socket's protocol and the grant operations), `approve`
//! (requests, approvals, denials), `expiry` (restore after a restart, the sweep every
//! second), `why` (recent denials, their causes and the commands that would help),
//! `webhook` (request notices).

pub mod approve;
pub mod client;
pub mod control;
pub mod entries;
pub mod expiry;
pub mod manager;
pub mod model;
pub mod store;
pub mod view;
pub mod webhook;
pub mod why;
pub mod window;

pub use manager::{DnsCall, Handle, Manager, Settings};
pub use view::{GrantPolicy, NameView};
