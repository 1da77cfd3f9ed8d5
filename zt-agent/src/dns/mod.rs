//! The DNS path: the resolver enrolled tasks' DNS is redirected to, the judgement of
//! queries and answers, and the addresses answers install per identity.

pub mod learned;
pub mod message;
pub mod server;
