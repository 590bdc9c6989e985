//! Sign-In with Ethereum (EIP-4361): checking a signed message against this node's nonce,
//! domain, URI, chain id and clock, then the signature with the `siwe` crate.
//!
//! Only externally owned accounts can sign in: a contract wallet's signature (EIP-1271, or
//! EIP-6492 for one not yet deployed) is checked by calling the contract over an Ethereum RPC,
//! which this node does not have, so such signatures are refused with
//! `contract_wallet_unsupported` rather than misreported as forged.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use blyan_primitives::Address;

use crate::client_addr::ClientBucket;
use crate::nonce::{IssuedNonce, NonceStore};
use crate::{Error, Result};

/// Longest sign-in message accepted, in bytes. EIP-4361 messages are a few hundred bytes; a
/// statement and a handful of resources fit well within this.
pub const SIWE_MESSAGE_BYTES_MAX: usize = 4096;

/// How far a message's issued-at may lie in the future, or before its nonce was issued, to
/// allow for a wallet's clock being off.
pub const SIWE_CLOCK_SKEW_SECONDS: u64 = 60;

/// Bytes of an externally owned account's signature: r (32), s (32), v (1).
const EOA_SIGNATURE_BYTES: usize = 65;

/// The suffix EIP-6492 appends to a counterfactual contract wallet's signature.
const EIP6492_MAGIC: [u8; 32] = [
    0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92,
    0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92,
];

/// What a client needs to write its sign-in message.
#[derive(Debug, Clone)]
pub(crate) struct Challenge {
    pub nonce: IssuedNonce,
    pub domain: String,
    pub chain_id: u64,
}

/// The node's sign-in checker.
#[derive(Debug)]
pub(crate) struct SignIn {
    nonces: NonceStore,
    domains: RwLock<Vec<String>>,
    chain_id: u64,
}

impl SignIn {
    /// A checker accepting messages for `domains` (none yet: see [`Self::accept_bound_address`])
    /// on `chain_id`, with nonces living `nonce_ttl`.
    pub(crate) fn new(domains: Vec<String>, chain_id: u64, nonce_ttl: Duration) -> Self {
        Self {
            nonces: NonceStore::new(nonce_ttl),
            domains: RwLock::new(domains),
            chain_id,
        }
    }

    /// When no domain is configured, accepts the address the node is bound to (and
    /// `localhost:PORT` for a loopback address: what a browser on the machine shows).
    pub(crate) fn accept_bound_address(&self, addr: SocketAddr) {
        let mut domains = self
            .domains
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if domains.is_empty() {
            domains.push(addr.to_string());
            if addr.ip().is_loopback() {
                domains.push(format!("localhost:{}", addr.port()));
            }
        }
    }

    fn domains(&self) -> Vec<String> {
        self.domains
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A new nonce for a client in `source`, with the domain and chain id the message must
    /// name.
    pub(crate) fn challenge(&self, source: ClientBucket, now: SystemTime) -> Challenge {
        Challenge {
            nonce: self.nonces.issue(source, now),
            domain: self.domains().into_iter().next().unwrap_or_default(),
            chain_id: self.chain_id,
        }
    }

    /// Checks `message` and its `signature` (hex, as `personal_sign` returns it) at `now` and
    /// consumes the message's nonce: the wallet that signed in.
    pub(crate) fn verify(
        &self,
        message: &str,
        signature: &str,
        now: SystemTime,
    ) -> Result<Address> {
        if message.len() > SIWE_MESSAGE_BYTES_MAX {
            return Err(Error::SiweMalformed {
                reason: format!("longer than {SIWE_MESSAGE_BYTES_MAX} bytes"),
            });
        }
        let parsed = siwe::Message::from_str(message).map_err(|error| Error::SiweMalformed {
            reason: error.to_string(),
        })?;
        let nonce_issued_at = self.nonces.check(&parsed.nonce, now)?;
        self.check_fields(&parsed, nonce_issued_at, now)?;
        let signature = decode_signature(signature)?;
        let signature: [u8; EOA_SIGNATURE_BYTES] = signature
            .try_into()
            .map_err(|_| Error::ContractWalletUnsupported { kind: "EIP-1271" })?;
        parsed
            .verify_eip191(&signature)
            .map_err(|_| Error::BadSignature)?;
        // Only now, with everything checked, is the nonce spent; a concurrent sign-in with the
        // same message loses here.
        self.nonces.consume(&parsed.nonce, now)?;
        Ok(Address::from_bytes(parsed.address))
    }

    fn check_fields(
        &self,
        message: &siwe::Message,
        nonce_issued_at: SystemTime,
        now: SystemTime,
    ) -> Result<()> {
        let domain = message.domain.as_str();
        let domains = self.domains();
        if !domains
            .iter()
            .any(|accepted| accepted.eq_ignore_ascii_case(domain))
        {
            return Err(Error::SiweDomainMismatch {
                got: domain.to_owned(),
                expected: domains.join(", "),
            });
        }
        let uri = message.uri.as_str();
        let authority = uri
            .strip_prefix("https://")
            .or_else(|| uri.strip_prefix("http://"))
            .and_then(|rest| rest.split(['/', '?', '#']).next());
        if !authority.is_some_and(|authority| authority.eq_ignore_ascii_case(domain)) {
            return Err(Error::SiweUriMismatch {
                uri: uri.to_owned(),
                domain: domain.to_owned(),
            });
        }
        if message.chain_id != self.chain_id {
            return Err(Error::SiweChainIdMismatch {
                got: message.chain_id,
                expected: self.chain_id,
            });
        }
        let skew = Duration::from_secs(SIWE_CLOCK_SKEW_SECONDS);
        let issued_at = to_system_time(message.issued_at.as_ref());
        if issued_at > now + skew || issued_at + skew < nonce_issued_at {
            return Err(Error::SiweIssuedAtInvalid {
                issued_at: message.issued_at.to_string(),
            });
        }
        if let Some(expiration) = &message.expiration_time
            && to_system_time(expiration.as_ref()) <= now
        {
            return Err(Error::SiweExpired {
                expiration: expiration.to_string(),
            });
        }
        if let Some(not_before) = &message.not_before
            && to_system_time(not_before.as_ref()) > now
        {
            return Err(Error::SiweNotYetValid {
                not_before: not_before.to_string(),
            });
        }
        Ok(())
    }
}

fn decode_signature(text: &str) -> Result<Vec<u8>> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    let bytes = hex::decode(digits).map_err(|_| Error::InvalidRequest {
        field: "signature".to_owned(),
        reason: "not hex".to_owned(),
    })?;
    if bytes.len() > EOA_SIGNATURE_BYTES && bytes.ends_with(&EIP6492_MAGIC) {
        return Err(Error::ContractWalletUnsupported { kind: "EIP-6492" });
    }
    Ok(bytes)
}

fn to_system_time(time: &time::OffsetDateTime) -> SystemTime {
    SystemTime::from(*time)
}

#[cfg(test)]
mod tests {
    use k256::ecdsa::SigningKey;
    use sha3::{Digest as _, Keccak256};

    use super::*;

    const DOMAIN: &str = "127.0.0.1:8700";

    const SOURCE: ClientBucket = ClientBucket::V4(std::net::Ipv4Addr::LOCALHOST);

    fn address_of(key: &SigningKey) -> Address {
        let point = key.verifying_key().to_encoded_point(false);
        let hash = Keccak256::digest(&point.as_bytes()[1..]);
        let mut bytes = [0_u8; 20];
        bytes.copy_from_slice(&hash[12..]);
        Address::from_bytes(bytes)
    }

    /// `personal_sign` (EIP-191) as a wallet computes it.
    fn personal_sign(key: &SigningKey, message: &str) -> String {
        let prefixed = format!("\x19Ethereum Signed Message:\n{}{message}", message.len());
        let (signature, recovery) = key
            .sign_digest_recoverable(Keccak256::new_with_prefix(prefixed.as_bytes()))
            .unwrap();
        let mut bytes = signature.to_bytes().to_vec();
        bytes.push(27 + recovery.to_byte());
        format!("0x{}", hex::encode(bytes))
    }

    fn rfc3339(time: SystemTime) -> String {
        time::OffsetDateTime::from(time)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    }

    struct Fields {
        domain: String,
        uri: String,
        chain_id: u64,
        issued_at: SystemTime,
        expiration: Option<SystemTime>,
    }

    fn message(address: Address, nonce: &str, fields: &Fields) -> String {
        let mut text = format!(
            "{} wants you to sign in with your Ethereum account:\n{address}\n\nSign in to Blyan.\n\nURI: {}\nVersion: 1\nChain ID: {}\nNonce: {nonce}\nIssued At: {}",
            fields.domain,
            fields.uri,
            fields.chain_id,
            rfc3339(fields.issued_at)
        );
        if let Some(expiration) = fields.expiration {
            text.push_str(&format!("\nExpiration Time: {}", rfc3339(expiration)));
        }
        text
    }

    fn good_fields(now: SystemTime) -> Fields {
        Fields {
            domain: DOMAIN.to_owned(),
            uri: format!("http://{DOMAIN}/"),
            chain_id: 1,
            issued_at: now,
            expiration: Some(now + Duration::from_secs(600)),
        }
    }

    fn setup() -> (SignIn, SigningKey, SystemTime) {
        let signin = SignIn::new(Vec::new(), 1, Duration::from_secs(300));
        signin.accept_bound_address(DOMAIN.parse().unwrap());
        let key = SigningKey::from_slice(&[0x42; 32]).unwrap();
        (signin, key, SystemTime::now())
    }

    /// Signs a message made from `edit(good fields)` and returns the verification's outcome.
    fn attempt(edit: impl FnOnce(&mut Fields)) -> Result<Address> {
        let (signin, key, now) = setup();
        let nonce = signin.challenge(SOURCE, now).nonce.nonce;
        let mut fields = good_fields(now);
        edit(&mut fields);
        let text = message(address_of(&key), &nonce, &fields);
        signin.verify(&text, &personal_sign(&key, &text), now)
    }

    fn check_refused(result: Result<Address>, code: &str) {
        let error = result.expect_err("sign-in must be refused");
        assert_eq!(error.code(), code, "{error}");
    }

    #[test]
    fn a_wallet_signature_signs_in_once() {
        let (signin, key, now) = setup();
        let challenge = signin.challenge(SOURCE, now);
        assert_eq!(challenge.domain, DOMAIN);
        let text = message(address_of(&key), &challenge.nonce.nonce, &good_fields(now));
        let signature = personal_sign(&key, &text);
        assert_eq!(
            signin.verify(&text, &signature, now).unwrap(),
            address_of(&key)
        );
        check_refused(signin.verify(&text, &signature, now), "nonce_replayed");
    }

    #[test]
    fn each_field_is_checked() {
        attempt(|_| {}).unwrap();
        check_refused(
            attempt(|f| f.domain = "evil.example".into()),
            "siwe_domain_mismatch",
        );
        check_refused(
            attempt(|f| f.uri = "http://evil.example/".into()),
            "siwe_uri_mismatch",
        );
        check_refused(attempt(|f| f.chain_id = 5), "siwe_chain_id_mismatch");
        let now = SystemTime::now();
        check_refused(
            attempt(|f| f.issued_at = now + Duration::from_secs(SIWE_CLOCK_SKEW_SECONDS + 5)),
            "siwe_issued_at_invalid",
        );
        check_refused(
            attempt(|f| f.issued_at = now - Duration::from_secs(SIWE_CLOCK_SKEW_SECONDS + 5)),
            "siwe_issued_at_invalid",
        );
        check_refused(
            attempt(|f| f.expiration = Some(now - Duration::from_secs(1))),
            "siwe_expired",
        );
    }

    #[test]
    fn localhost_is_accepted_for_a_loopback_node() {
        attempt(|f| {
            f.domain = "localhost:8700".into();
            f.uri = "http://localhost:8700/chat".into();
        })
        .unwrap();
    }

    #[test]
    fn signatures_from_others_or_contracts_are_refused() {
        let (signin, key, now) = setup();
        let nonce = signin.challenge(SOURCE, now).nonce.nonce;
        let text = message(address_of(&key), &nonce, &good_fields(now));
        let other = SigningKey::from_slice(&[0x43; 32]).unwrap();
        check_refused(
            signin.verify(&text, &personal_sign(&other, &text), now),
            "bad_signature",
        );
        let contract_signature = format!("0x{}", "ab".repeat(96));
        check_refused(
            signin.verify(&text, &contract_signature, now),
            "contract_wallet_unsupported",
        );
        let counterfactual = format!("0x{}{}", "ab".repeat(80), hex::encode(EIP6492_MAGIC));
        check_refused(
            signin.verify(&text, &counterfactual, now),
            "contract_wallet_unsupported",
        );
        check_refused(signin.verify(&text, "0xzz", now), "invalid_request");
        // None of these refusals spent the nonce.
        signin
            .verify(&text, &personal_sign(&key, &text), now)
            .unwrap();
    }

    #[test]
    fn messages_are_bounded_and_parsed() {
        let (signin, _, now) = setup();
        check_refused(signin.verify("hello", "0x00", now), "siwe_malformed");
        let at_bound = "x".repeat(SIWE_MESSAGE_BYTES_MAX);
        check_refused(signin.verify(&at_bound, "0x00", now), "siwe_malformed");
        let past_bound = "x".repeat(SIWE_MESSAGE_BYTES_MAX + 1);
        let error = signin.verify(&past_bound, "0x00", now).unwrap_err();
        assert!(error.to_string().contains("longer than"), "{error}");
    }

    #[test]
    fn addresses_parse_with_checksum() {
        let text = "0x6Da01670d8fc844e736095918bbE11fE8D564163";
        let address: Address = text.parse().unwrap();
        assert_eq!(address.to_string(), text);
        assert_eq!(text.to_lowercase().parse::<Address>().unwrap(), address);
        assert!(
            "0x6da01670d8fc844e736095918bbE11fE8D564163"
                .parse::<Address>()
                .is_err()
        );
        assert!(
            "6Da01670d8fc844e736095918bbE11fE8D564163"
                .parse::<Address>()
                .is_err()
        );
        assert!("0x6Da0".parse::<Address>().is_err());
    }
}
