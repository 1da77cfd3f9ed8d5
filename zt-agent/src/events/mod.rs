pub mod decode;
pub mod provenance;
pub mod sink;
