//! The standard HMAC-SHA256 challenge (`PROTOCOL.md`, "The standard HMAC challenge").
//!
//! The server sends a [`HmacQuest`] `{"timestamp": T, "nonce": N}`; the client answers with the
//! lowercase hex of HMAC-SHA256(key = its secret, message = the decimal digits of `T` followed by
//! `N`) — exactly what the snippet in the `wse` README computes with Node's `crypto`.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The quest of the standard HMAC challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HmacQuest {
    /// When the quest was made, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// 32 lowercase hex characters: 16 random bytes, used once.
    pub nonce: String,
}

impl HmacQuest {
    /// A fresh quest stamped with the current time.
    pub fn new() -> Self {
        let nonce: [u8; 16] = rand::random();
        Self {
            timestamp: now_millis(),
            nonce: hex(&nonce),
        }
    }

    /// The solution a client holding `secret` sends back.
    pub fn solve(&self, secret: &[u8]) -> String {
        hex(&self.mac(secret).finalize().into_bytes())
    }

    /// Whether `answer` is this quest's solution for `secret`, compared in constant time.
    pub fn verify(&self, secret: &[u8], answer: &str) -> bool {
        match unhex(answer) {
            Some(bytes) => self.mac(secret).verify_slice(&bytes).is_ok(),
            None => false,
        }
    }

    /// How old the quest is at `now_ms`, in milliseconds (0 for a quest from the future).
    pub fn age_millis(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.timestamp)
    }

    fn mac(&self, secret: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(self.timestamp.to_string().as_bytes());
        mac.update(self.nonce.as_bytes());
        mac
    }
}

impl Default for HmacQuest {
    fn default() -> Self {
        Self::new()
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if bytes.len() % 2 != 0 {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_node_crypto() {
        // crypto.createHmac('sha256', 's3cret').update(1732240000000 + '00112233445566778899aabbccddeeff').digest('hex')
        let quest = HmacQuest {
            timestamp: 1_732_240_000_000,
            nonce: "00112233445566778899aabbccddeeff".into(),
        };
        let answer = quest.solve(b"s3cret");
        assert_eq!(
            answer,
            "3f86e6ef72f4a35bda521af5780e8135b2f9264bd29e5771a8a8472882b45396"
        );
        assert!(quest.verify(b"s3cret", &answer));
        assert!(!quest.verify(b"other", &answer));
        assert!(!quest.verify(b"s3cret", &answer.to_uppercase()));
        assert!(!quest.verify(b"s3cret", "zz"));
    }

    #[test]
    fn fresh_quests_differ() {
        let (a, b) = (HmacQuest::new(), HmacQuest::new());
        assert_ne!(a.nonce, b.nonce);
        assert_eq!(a.nonce.len(), 32);
        assert!(
            a.nonce
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
}
