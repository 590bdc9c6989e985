//! A node's network identity is its chain key: the libp2p peer id is derived from the same
//! secp256k1 key that signs its blocks, so a peer id names exactly one chain author address.

use blyan_chain::{Address, AuthorKey};
use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey, secp256k1};

use crate::error::{NetworkError, Result};

/// The libp2p keypair of `key`: the same secp256k1 secret, so the peer id maps to
/// `key.address()` ([`peer_address`]).
pub fn keypair_of(key: &AuthorKey) -> Result<Keypair> {
    let mut secret = key.secret_bytes();
    let secret = secp256k1::SecretKey::try_from_bytes(&mut secret).map_err(|error| {
        NetworkError::Identity {
            reason: error.to_string(),
        }
    })?;
    Ok(Keypair::from(secp256k1::Keypair::from(secret)))
}

/// The chain author address of `peer`, when its peer id embeds a secp256k1 public key (every
/// Blyan node's does; other key types have none).
pub fn peer_address(peer: &PeerId) -> Option<Address> {
    let multihash = peer.as_ref();
    // Identity multihash (code 0): the digest is the protobuf-encoded public key itself.
    if multihash.code() != 0 {
        return None;
    }
    let public = PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    address_of_public(&public)
}

/// The chain author address of a libp2p public key (secp256k1 only).
pub fn address_of_public(public: &PublicKey) -> Option<Address> {
    let key = public.clone().try_into_secp256k1().ok()?;
    Some(Address::from_uncompressed_public_key(
        &key.to_bytes_uncompressed(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_id_names_the_chain_address() {
        let key = AuthorKey::generate();
        let keypair = keypair_of(&key).expect("a chain key is a valid libp2p key");
        let peer = keypair.public().to_peer_id();
        assert_eq!(peer_address(&peer), Some(key.address()));
        let other = AuthorKey::generate();
        assert_ne!(peer_address(&peer), Some(other.address()));
    }

    #[test]
    fn a_non_secp256k1_peer_has_no_address() {
        assert_eq!(peer_address(&PeerId::random()), None);
    }
}
