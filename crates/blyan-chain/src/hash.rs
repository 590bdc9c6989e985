//! Hashing payloads. The hash types themselves ([`PayloadHash`], `BlockHash`) are
//! `blyan-primitives`' (they name, parse and print hashes); computing a payload's hash, on all
//! cores for large payloads, belongs to the chain.

use blyan_primitives::PayloadHash;

/// Payloads at least this long are hashed with `blake3::Hasher::update_rayon` (all cores);
/// below it the thread hand-off costs more than it saves.
pub const RAYON_HASH_BYTES_MIN: usize = 256 * 1024;

/// blake3 of `bytes`, on all cores for large inputs. Used for payloads on append, on full
/// verification and by the benches' baseline, so all three hash the same way.
pub fn hash_payload(bytes: &[u8]) -> PayloadHash {
    let mut hasher = blake3::Hasher::new();
    if bytes.len() >= RAYON_HASH_BYTES_MIN {
        hasher.update_rayon(bytes);
    } else {
        hasher.update(bytes);
    }
    PayloadHash(*hasher.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_hash_matches_plain_blake3_on_both_paths() {
        let small = vec![7u8; 1000];
        let large = vec![9u8; RAYON_HASH_BYTES_MIN + 17];
        assert_eq!(hash_payload(&small).0, *blake3::hash(&small).as_bytes());
        assert_eq!(hash_payload(&large).0, *blake3::hash(&large).as_bytes());
    }
}
