//! # blyan-primitives: the vocabulary every Blyan crate shares
//!
//! The small types several crates must agree on, declared once: [`Address`] (an Ethereum
//! account: block authors, ledger accounts and signed-in wallets are the same value),
//! [`BlockHash`] and [`PayloadHash`], [`ExpertName`] (`layer{L}.expert{E}`), [`Dtype`] (what a
//! tensor payload stores and a header describes), [`Durability`], the limits that more than one
//! crate enforces ([`TENSOR_NAME_BYTES_MAX`], [`BLOCK_PAYLOAD_BYTES_MAX`], …), and
//! [`ImmutableBytes`], the contract under which bytes may be lent to a tensor without a copy,
//! and [`create_owner_only`] for files that hold secrets or balances.
//!
//! ## Invariants
//! - Each type is valid by construction: parsing is the only way in from text, and each refusal
//!   is a distinct [`Error`] variant naming the input.
//! - Text forms are one spelling each: addresses print EIP-55 and parse only with a lower-case
//!   `0x`; hashes print `0x` + lower-case hex; dtypes are `f32`, `f16`, `bf16`, `i8`.
//! - Relations between limits are compile-time assertions beside them.
//!
//! ## Must not depend on
//! Any other blyan crate, RocksDB, libtorch, tokio or HTTP: everything builds on it.
//!
//! ## Where unsafe lives
//! Only in `immutable.rs`: the declaration of [`ImmutableBytes`] and the implementations that
//! carry its proof. The rest of the crate denies `unsafe_code`.
//!
//! ## Example
//! ```
//! use blyan_primitives::{Address, Dtype, ExpertName};
//!
//! let author: Address = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".parse().unwrap();
//! assert_eq!(author.to_lower_hex(), "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed");
//! let expert: ExpertName = "layer2.expert5".parse().unwrap();
//! assert_eq!((expert.layer(), expert.expert()), (2, 5));
//! assert_eq!("bf16".parse::<Dtype>().unwrap().size_bytes(), 2);
//! ```
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![deny(unsafe_code)]

mod address;
mod dtype;
mod durability;
mod error;
mod expert;
mod files;
mod hash;
mod immutable;
mod limits;
mod text;

pub use address::{Address, keccak256};
pub use dtype::Dtype;
pub use durability::Durability;
pub use error::{Error, Result};
pub use expert::ExpertName;
pub use files::create_owner_only;
pub use hash::{BlockHash, PayloadHash};
pub use immutable::{AssumeImmutable, ImmutableBytes};
pub use limits::{
    BLOCK_PAYLOAD_BYTES_MAX, EXPERT_INDEX_MAX, EXPERT_LAYER_INDEX_MAX, POW_DIFFICULTY_BITS_MAX,
    TENSOR_NAME_BYTES_MAX, TENSOR_RANK_MAX,
};
