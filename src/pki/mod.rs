//! Cluster PKI: the key algorithms kaws issues with. The certificate table,
//! issuing (rcgen) and inspection (x509-parser) live beside this as the
//! cluster PKI work lands.

mod algorithm;

pub use algorithm::KeyAlgorithm;
