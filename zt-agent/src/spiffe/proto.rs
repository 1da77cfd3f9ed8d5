//! The Workload API's messages and service, generated from proto/workload.proto.
#![allow(
    clippy::pedantic,
    clippy::nursery,
    missing_docs,
    reason = "generated code"
)]

tonic::include_proto!("_");
