//! Secrets and personal data that must never become training data: a model that learns a key
//! or an address can repeat it to anyone.
//!
//! Each pattern is a regular expression over the training text, tightened where a bare pattern
//! would refuse ordinary prose: card numbers must pass the Luhn check, e-mail addresses at the
//! reserved example domains (RFC 2606/6761: `example.com`, `*.test`, …) are allowed, phone numbers
//! are recognised only in international form (`+` and 10 to 15 digits). What is found is reported
//! by kind and byte offset, never echoed.
//!
//! Not detected: BIP-39 seed phrases (the 2,048-word list would have to ship with the crate and
//! twelve common English words in a row are frequent in prose), national identity numbers, and
//! postal addresses.

use std::sync::LazyLock;

use regex::Regex;

/// A kind of secret L0 refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SecretKind {
    /// `0x` and 64 hexadecimal digits: an Ethereum-style private key (or anything shaped like
    /// one; write a block hash without its `0x` to quote it).
    HexPrivateKey,
    /// A PEM `-----BEGIN … PRIVATE KEY-----` block.
    PemPrivateKey,
    /// An AWS access key id (`AKIA…`, `ASIA…`).
    AwsAccessKey,
    /// A GitHub token (`ghp_…`, `gho_…`, `ghu_…`, `ghs_…`, `ghr_…`, `github_pat_…`).
    GitHubToken,
    /// An OpenAI-style secret key (`sk-…`).
    OpenAiKey,
    /// A Slack token (`xoxb-…`, `xoxp-…`, …).
    SlackToken,
    /// A Blyan API key (`bly_` and 64 hexadecimal digits).
    BlyanApiKey,
    /// A JSON Web Token (three base64url parts, the first two JSON objects).
    JsonWebToken,
}

impl SecretKind {
    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::HexPrivateKey => "hex_private_key",
            SecretKind::PemPrivateKey => "pem_private_key",
            SecretKind::AwsAccessKey => "aws_access_key",
            SecretKind::GitHubToken => "github_token",
            SecretKind::OpenAiKey => "openai_key",
            SecretKind::SlackToken => "slack_token",
            SecretKind::BlyanApiKey => "blyan_api_key",
            SecretKind::JsonWebToken => "json_web_token",
        }
    }
}

/// A kind of personal data L0 refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PersonalDataKind {
    /// An e-mail address outside the reserved example domains.
    EmailAddress,
    /// A payment card number (13 to 19 digits passing the Luhn check).
    CardNumber,
    /// A phone number in international form.
    PhoneNumber,
}

impl PersonalDataKind {
    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            PersonalDataKind::EmailAddress => "email_address",
            PersonalDataKind::CardNumber => "card_number",
            PersonalDataKind::PhoneNumber => "phone_number",
        }
    }
}

/// Something found, by kind and byte offset into the training text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finding {
    Secret { kind: SecretKind, at: usize },
    PersonalData { kind: PersonalDataKind, at: usize },
}

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("the built-in patterns compile")
}

static SECRETS: LazyLock<Vec<(SecretKind, Regex)>> = LazyLock::new(|| {
    vec![
        (
            SecretKind::PemPrivateKey,
            regex(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
        ),
        (
            SecretKind::HexPrivateKey,
            regex(r"\b0[xX][0-9a-fA-F]{64}\b"),
        ),
        (
            SecretKind::AwsAccessKey,
            regex(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
        ),
        (
            SecretKind::GitHubToken,
            regex(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
        ),
        (
            SecretKind::OpenAiKey,
            regex(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
        ),
        (
            SecretKind::SlackToken,
            regex(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
        ),
        (SecretKind::BlyanApiKey, regex(r"\bbly_[0-9a-fA-F]{64}\b")),
        (
            SecretKind::JsonWebToken,
            regex(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{8,}"),
        ),
    ]
});

static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| regex(r"[A-Za-z0-9._%+-]+@((?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,})\b"));
// Runs of 13 to 19 digits, single spaces or dashes allowed between them.
static CARD: LazyLock<Regex> = LazyLock::new(|| regex(r"\b\d(?:[ -]?\d){12,18}\b"));
// `+`, a country code and groups of digits; the digit count is checked after the match.
static PHONE: LazyLock<Regex> = LazyLock::new(|| regex(r"\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){2,6}"));

/// Domains reserved for examples and tests (RFC 2606, RFC 6761): addresses there reach no one.
fn is_example_domain(domain: &str) -> bool {
    let domain = domain.to_ascii_lowercase();
    ["example.com", "example.org", "example.net"]
        .iter()
        .any(|reserved| domain == *reserved || domain.ends_with(&format!(".{reserved}")))
        || [".test", ".example", ".invalid", ".localhost"]
            .iter()
            .any(|suffix| domain.ends_with(suffix))
}

/// The Luhn checksum every payment card number passes.
fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(index, digit)| {
            let digit = u32::from(*digit);
            if index % 2 == 1 {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The first secret or personal datum in `text`, secrets first.
pub(crate) fn find(text: &str) -> Option<Finding> {
    for (kind, pattern) in SECRETS.iter() {
        if let Some(found) = pattern.find(text) {
            return Some(Finding::Secret {
                kind: *kind,
                at: found.start(),
            });
        }
    }
    for captures in EMAIL.captures_iter(text) {
        let domain = captures.get(1).map_or("", |domain| domain.as_str());
        if !is_example_domain(domain) {
            let at = captures.get(0).map_or(0, |whole| whole.start());
            return Some(Finding::PersonalData {
                kind: PersonalDataKind::EmailAddress,
                at,
            });
        }
    }
    for found in CARD.find_iter(text) {
        let digits: Vec<u8> = found
            .as_str()
            .bytes()
            .filter(u8::is_ascii_digit)
            .map(|byte| byte - b'0')
            .collect();
        // Issuer identification numbers start with 2 to 6 (Mastercard 2-series to Discover).
        if (13..=19).contains(&digits.len()) && (2..=6).contains(&digits[0]) && luhn_valid(&digits)
        {
            return Some(Finding::PersonalData {
                kind: PersonalDataKind::CardNumber,
                at: found.start(),
            });
        }
    }
    for found in PHONE.find_iter(text) {
        let digits = found.as_str().bytes().filter(u8::is_ascii_digit).count();
        if (10..=15).contains(&digits) {
            return Some(Finding::PersonalData {
                kind: PersonalDataKind::PhoneNumber,
                at: found.start(),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Option<&str>) {
        let found = find(text).map(|finding| match finding {
            Finding::Secret { kind, .. } => kind.as_str(),
            Finding::PersonalData { kind, .. } => kind.as_str(),
        });
        assert_eq!(found, expected, "{text}");
    }

    #[test]
    fn each_secret_kind_is_found() {
        check(
            &format!("my key is 0x{} keep it", "ab".repeat(32)),
            Some("hex_private_key"),
        );
        check(
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow==\n-----END RSA PRIVATE KEY-----",
            Some("pem_private_key"),
        );
        check("-----BEGIN PRIVATE KEY-----", Some("pem_private_key"));
        check(
            "export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
            Some("aws_access_key"),
        );
        check(
            "token ghp_0123456789abcdefghijABCDEFGHIJ012345 here",
            Some("github_token"),
        );
        check(
            "OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwxyz012345",
            Some("openai_key"),
        );
        check("xoxb-123456789012-abcdefghij", Some("slack_token"));
        check(&format!("bly_{}", "0f".repeat(32)), Some("blyan_api_key"));
        check(
            "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlLXBhcnQ",
            Some("json_web_token"),
        );
    }

    #[test]
    fn personal_data_is_found_and_look_alikes_are_not() {
        check("write to jane.doe@mailbox.org today", Some("email_address"));
        check("write to jane@example.com or bob@host.test", None);
        check("card 4111 1111 1111 1111 exp 12/29", Some("card_number"));
        check("card 4111-1111-1111-1112 fails Luhn", None);
        check("the year 1999 and 12 apples, ISBN 9780141439518", None);
        check("call +44 20 7946 0958 after six", Some("phone_number"));
        check("a temperature of +12 degrees", None);
        check("short hashes like 0xdeadbeef are fine", None);
    }

    #[test]
    fn luhn_accepts_valid_and_refuses_changed_numbers() {
        assert!(luhn_valid(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 3]));
        assert!(!luhn_valid(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 4]));
    }
}
