//! Virtual-key digests: HMAC-SHA256 of a presented key under the store's secret, as hex.
//!
//! The key store looks a request's key up by this digest on every request. The keyed state
//! (the secret's inner and outer pads, hashed once) is kept and cloned per digest, and
//! `sha2` uses the CPU's SHA extensions where it has them; the result is the same bytes as
//! Python's `hmac.digest(secret, key, "sha256").hex()`, which wrote the stored digests.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// HMAC-SHA256 under one secret, its keyed state computed once.
#[derive(Clone)]
pub struct KeyDigest {
    keyed: Hmac<Sha256>,
}

impl KeyDigest {
    /// The digester for `secret` (any length, as HMAC allows).
    pub fn new(secret: &[u8]) -> Self {
        // HMAC takes a key of any length: this cannot fail.
        let keyed = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        };
        Self { keyed }
    }

    /// The lowercase hex HMAC-SHA256 of `message`.
    pub fn hex(&self, message: &[u8]) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut mac = self.keyed.clone();
        mac.update(message);
        let bytes = mac.finalize().into_bytes();
        let mut out = String::with_capacity(2 * bytes.len());
        for b in bytes.iter() {
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let d = KeyDigest::new(b"Jefe");
        assert_eq!(
            d.hex(b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn rfc_4231_case_6_key_longer_than_a_block() {
        // RFC 4231 test case 6: a 131-byte key is hashed first.
        let d = KeyDigest::new(&[0xaa; 131]);
        assert_eq!(
            d.hex(b"Test Using Larger Than Block-Size Key - Hash Key First"),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn the_keyed_state_is_reused_not_consumed() {
        let d = KeyDigest::new(b"secret");
        assert_eq!(d.hex(b"a"), d.hex(b"a"));
        assert_ne!(d.hex(b"a"), d.hex(b"b"));
    }
}
