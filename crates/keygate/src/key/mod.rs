//! The key format: generation, parsing and the types that carry a key.
//!
//! A key reads `{prefix}_{id}_{secret}{crc}`, for example
//! `acme_live_4fT0qKb2mZ9x_Yh3…Q1w2e3`. See [`KeyFormat`] for the rules and the regular expression
//! a secret scanner uses.

mod format;
mod id;
mod plaintext;
mod presented;

pub(crate) use format::digest_input;
pub use format::{
    CHECKSUM_LEN, FormatError, InvalidPrefix, KeyFormat, MAX_KEY_LEN, MAX_PREFIX_LEN, ParsedKey,
    SECRET_LEN,
};
pub use id::{InvalidKeyId, KeyId};
pub use plaintext::PlaintextKey;
pub use presented::PresentedKey;
