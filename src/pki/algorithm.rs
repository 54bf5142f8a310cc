//! Key algorithms a cluster may use for its CAs, leaves and administrators.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    #[default]
    EcdsaP256,
    EcdsaP384,
    Rsa3072,
}

impl KeyAlgorithm {
    pub const ALL: [KeyAlgorithm; 3] = [Self::EcdsaP256, Self::EcdsaP384, Self::Rsa3072];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
            Self::Rsa3072 => "rsa-3072",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown key algorithm {0:?}; use one of ecdsa-p256, ecdsa-p384, rsa-3072")]
pub struct UnknownAlgorithm(String);

impl FromStr for KeyAlgorithm {
    type Err = UnknownAlgorithm;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for KeyAlgorithm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for KeyAlgorithm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl KeyAlgorithm {
    fn signature_algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Rsa3072 => &rcgen::PKCS_RSA_SHA256,
        }
    }

    /// A fresh private key. ECDSA keys come from rcgen (ring); ring cannot
    /// generate RSA keys, so RSA-3072 comes from OpenSSL.
    pub fn generate(self) -> Result<rcgen::KeyPair, rcgen::Error> {
        match self {
            Self::EcdsaP256 | Self::EcdsaP384 => rcgen::KeyPair::generate_for(self.signature_algorithm()),
            Self::Rsa3072 => {
                let rsa = openssl::rsa::Rsa::generate(3072).map_err(|_| rcgen::Error::KeyGenerationUnavailable)?;
                let pkey = openssl::pkey::PKey::from_rsa(rsa).map_err(|_| rcgen::Error::KeyGenerationUnavailable)?;
                let der = zeroize::Zeroizing::new(
                    pkey.private_key_to_pkcs8().map_err(|_| rcgen::Error::KeyGenerationUnavailable)?,
                );
                rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der.as_slice().into(), self.signature_algorithm())
            }
        }
    }

    /// Loads a PKCS#8 PEM private key of this algorithm.
    pub fn load(self, pem: &str) -> Result<rcgen::KeyPair, rcgen::Error> {
        rcgen::KeyPair::from_pem_and_sign_algo(pem, self.signature_algorithm())
    }
}
