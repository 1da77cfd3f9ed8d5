//! The DNS path: the resolver enrolled tasks' DNS is redirected to, the judgement of
//! queries and answers, the addresses answers install per identity, the host's own
//! addresses (which they never install), and each identity's share of the resolver.

pub mod host;
pub mod learned;
pub mod message;
pub mod server;
pub mod shares;
