//! `config/tokenomics.yaml`: the shipped numbers, and malformed files refused with the field
//! named.

use blyan_ledger::{AccountId, LedgerError, SystemAccount, Tokenomics};

use crate::support::bly;

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/tokenomics.yaml");

#[test]
fn shipped_file_has_the_seed_numbers() {
    let t = Tokenomics::load(SHIPPED).unwrap();
    assert_eq!(t.supply.cap, bly("1000000000"));
    assert_eq!(t.supply.genesis, bly("100000000"));
    assert_eq!(t.supply.inflation_yearly_bps_max, 1000);
    assert_eq!(t.rewards.validation_per_sample, bly("20"));
    assert_eq!(t.rewards.learning_per_improvement_percent, bly("20000"));
    assert_eq!(t.rewards.data_per_sample, bly("20"));
    assert_eq!(t.pol.candidate_bond, bly("100"));
    assert_eq!(t.inference.fee_per_1000_tokens, bly("1"));
    assert_eq!(t.inference.prompt_fee_per_1000_tokens, bly("0.25"));
    assert_eq!(t.inference.burn_share_bps, 2000);
    assert_eq!(t.payments.quote_ttl_seconds, 300);
    assert_eq!(t.payments.hold_ttl_seconds, 300);
    assert_eq!(t.payments.capture_tolerance_bps, 1000);
    let allocated: Vec<(AccountId, blyan_ledger::Amount)> = t
        .genesis_allocations
        .iter()
        .map(|a| (a.account, a.amount))
        .collect();
    assert_eq!(
        allocated,
        vec![
            (SystemAccount::RewardPool.into(), bly("40000000")),
            (SystemAccount::Treasury.into(), bly("30000000")),
            (SystemAccount::Team.into(), bly("15000000")),
            (SystemAccount::Foundation.into(), bly("15000000")),
        ]
    );
    // The embedded copy is the same file.
    assert_eq!(Tokenomics::shipped().unwrap(), t);
}

#[test]
fn missing_file_gives_the_shipped_defaults_and_unreadable_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.yaml");
    assert_eq!(
        Tokenomics::load(&missing).unwrap(),
        Tokenomics::shipped().unwrap()
    );
    // A directory exists but cannot be read as a file.
    assert!(matches!(
        Tokenomics::load(dir.path()),
        Err(LedgerError::ConfigRead { .. })
    ));
}

/// Replaces `from` with `to` in the shipped file and parses the result.
fn parse_edited(from: &str, to: &str) -> blyan_ledger::Result<Tokenomics> {
    let text = blyan_ledger::SHIPPED_TOKENOMICS_YAML;
    assert!(text.contains(from), "the shipped file has {from:?}");
    Tokenomics::from_yaml_str(&text.replacen(from, to, 1))
}

#[test]
fn malformed_files_are_refused_naming_the_field() {
    // (edit, the field the error must name, a word its message must contain)
    let cases: &[(&str, &str, &str, &str)] = &[
        ("cap: \"1000000000\"", "cap: 1.5", "supply.cap", "float"),
        (
            "cap: \"1000000000\"",
            "cap: \"lots\"",
            "supply.cap",
            "decimal",
        ),
        (
            "cap: \"1000000000\"",
            "cap: \"-5\"",
            "supply.cap",
            "negative",
        ),
        (
            "cap: \"1000000000\"",
            "cap: \"0.0000001\"",
            "supply.cap",
            "decimals",
        ),
        (
            "cap: \"1000000000\"",
            "cap: \"99999999999999999999999\"",
            "supply.cap",
            "too large",
        ),
        (
            "validation_per_sample: \"20\"",
            "validation_per_sample: [20]",
            "rewards.validation_per_sample",
            "amount",
        ),
        (
            "burn_share_bps: 2000",
            "burn_share_bps: -1",
            "inference.burn_share_bps",
            "invalid",
        ),
        (
            "burn_share_bps: 2000",
            "burn_share_bps: 2000\n  burn_share_percent: 20",
            "inference.burn_share_percent",
            "unknown field",
        ),
        (
            "account: system:treasury",
            "account: \"0x1234\"",
            "genesis_allocations[1].account",
            "40 hex",
        ),
        (
            "account: system:treasury",
            "account: system:bank",
            "genesis_allocations[1].account",
            "system account",
        ),
        (
            "quote_ttl_seconds: 300\n",
            "",
            "payments",
            "quote_ttl_seconds",
        ),
        (
            "candidate_bond: \"100\"",
            "candidate_bond: 100.5",
            "pol.candidate_bond",
            "float",
        ),
        (
            "data_per_sample: \"20\"\n",
            "",
            "rewards",
            "data_per_sample",
        ),
    ];
    for &(from, to, field, word) in cases {
        match parse_edited(from, to) {
            Err(LedgerError::ConfigParse {
                field: got,
                message,
            }) => {
                assert_eq!(got, field, "{to:?}: {message}");
                assert!(message.contains(word), "{to:?}: {message:?} lacks {word:?}");
            }
            other => panic!("{to:?}: expected a parse error naming {field}, got {other:?}"),
        }
    }
}

#[test]
fn inconsistent_files_are_refused_naming_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "amount: \"30000000\"",
            "amount: \"30000001\"",
            "genesis_allocations",
        ),
        (
            "genesis: \"100000000\"",
            "genesis: \"1000000001\"",
            "supply.genesis",
        ),
        ("genesis: \"100000000\"", "genesis: \"0\"", "supply.genesis"),
        ("cap: \"1000000000\"", "cap: \"0\"", "supply.cap"),
        (
            "amount: \"30000000\"",
            "amount: \"0\"",
            "genesis_allocations[1].amount",
        ),
        (
            "account: system:treasury",
            "account: system:reward_pool",
            "genesis_allocations[1].account",
        ),
        (
            "account: system:treasury",
            "account: system:mint",
            "genesis_allocations[1].account",
        ),
        (
            "inflation_yearly_bps_max: 1000",
            "inflation_yearly_bps_max: 10001",
            "supply.inflation_yearly_bps_max",
        ),
        (
            "burn_share_bps: 2000",
            "burn_share_bps: 10001",
            "inference.burn_share_bps",
        ),
        (
            "capture_tolerance_bps: 1000",
            "capture_tolerance_bps: 10001",
            "payments.capture_tolerance_bps",
        ),
        (
            "quote_ttl_seconds: 300",
            "quote_ttl_seconds: 0",
            "payments.quote_ttl_seconds",
        ),
        (
            "hold_ttl_seconds: 300",
            "hold_ttl_seconds: 86401",
            "payments.hold_ttl_seconds",
        ),
        (
            "fee_per_1000_tokens: \"1\"",
            "fee_per_1000_tokens: \"0\"",
            "inference.fee_per_1000_tokens",
        ),
        (
            "prompt_fee_per_1000_tokens: \"0.25\"",
            "prompt_fee_per_1000_tokens: \"1000000001\"",
            "inference.prompt_fee_per_1000_tokens",
        ),
        (
            "validation_per_sample: \"20\"",
            "validation_per_sample: \"1000000001\"",
            "rewards.validation_per_sample",
        ),
        (
            "data_per_sample: \"20\"",
            "data_per_sample: \"1000000001\"",
            "rewards.data_per_sample",
        ),
        (
            "candidate_bond: \"100\"",
            "candidate_bond: \"0\"",
            "pol.candidate_bond",
        ),
        (
            "candidate_bond: \"100\"",
            "candidate_bond: \"1000000001\"",
            "pol.candidate_bond",
        ),
    ];
    for &(from, to, field) in cases {
        match parse_edited(from, to) {
            Err(LedgerError::ConfigInvalid { field: got, reason }) => {
                assert_eq!(got, field, "{to:?}: {reason}");
            }
            other => {
                panic!("{to:?}: expected an invalid-value error naming {field}, got {other:?}")
            }
        }
    }
    // At the bounds: accepted.
    parse_edited("burn_share_bps: 2000", "burn_share_bps: 10000").unwrap();
    parse_edited("hold_ttl_seconds: 300", "hold_ttl_seconds: 86400").unwrap();
}
