//! The canonical encoding: round trips, hash stability, and decoding hostile bytes.

use blyan_chain::{
    Address, AuthorKey, BLOCK_HEADER_BYTES_MAX, BlockHash, BlockHeader, BlockKind, BlockMeta,
    ChainId, Dtype, ExpertName, HEADER_FORMAT_VERSION, PayloadHash, Signature, TensorMeta,
    decode_block, encode_block,
};
use proptest::prelude::*;

fn arb_hash() -> impl Strategy<Value = BlockHash> {
    any::<[u8; 32]>().prop_map(BlockHash)
}

fn arb_kind() -> impl Strategy<Value = BlockKind> {
    prop::sample::select(vec![
        BlockKind::Genesis,
        BlockKind::Meta,
        BlockKind::Expert,
        BlockKind::Router,
        BlockKind::SharedWeights,
        BlockKind::DatasetEntry,
        BlockKind::PolProof,
        BlockKind::Migration,
    ])
}

fn arb_dtype() -> impl Strategy<Value = Dtype> {
    prop::sample::select(Dtype::ALL.to_vec())
}

fn arb_meta() -> impl Strategy<Value = BlockMeta> {
    let expert = prop::option::of(
        (0u32..=1023, 0u32..=65_535).prop_map(|(l, e)| ExpertName::new(l, e).unwrap()),
    );
    let tensor = (
        "[a-z0-9_.]{1,20}",
        arb_dtype(),
        prop::collection::vec(any::<u64>(), 0..4),
    )
        .prop_map(|(name, dtype, shape)| TensorMeta { name, dtype, shape });
    (
        expert,
        prop::option::of(any::<u32>()),
        any::<u32>(),
        prop::collection::vec(tensor, 0..4),
    )
        .prop_map(|(expert, layer, version, tensors)| BlockMeta {
            expert,
            layer,
            version,
            tensors,
        })
}

prop_compose! {
    fn arb_header()(
        chain in prop::sample::select(ChainId::ALL.to_vec()),
        height in any::<u64>(),
        prev_hash in prop::option::of(arb_hash()),
        depends_on in prop::collection::vec(arb_hash(), 0..6),
        kind in arb_kind(),
        payload_hash in any::<[u8; 32]>(),
        payload_bytes in any::<u64>(),
        timestamp_ms in any::<u64>(),
        author in any::<[u8; 20]>(),
        pow_nonce in any::<u64>(),
        meta in arb_meta(),
        signature in prop::option::of(prop::collection::vec(any::<u8>(), 65)),
    ) -> BlockHeader {
        BlockHeader {
            format_version: HEADER_FORMAT_VERSION,
            chain,
            height,
            prev_hash,
            depends_on,
            kind,
            payload_hash: PayloadHash(payload_hash),
            payload_bytes,
            timestamp_ms,
            author: Address(author),
            pow_nonce,
            meta,
            signature: signature.map(|bytes| Signature(bytes.try_into().unwrap())),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn header_round_trips_and_hash_is_stable(header in arb_header()) {
        let bytes = header.encode();
        let decoded = BlockHeader::decode(&bytes).unwrap();
        prop_assert_eq!(&decoded, &header);
        prop_assert_eq!(decoded.hash(), header.hash());
        prop_assert_eq!(decoded.encode(), bytes);
        // The signature is outside the hash; every other field is inside it.
        let mut unsigned = header.clone();
        unsigned.signature = None;
        prop_assert_eq!(unsigned.hash(), header.hash());
        let mut moved = header.clone();
        moved.height = moved.height.wrapping_add(1);
        prop_assert_ne!(moved.hash(), header.hash());
        let mut renonced = header.clone();
        renonced.pow_nonce = renonced.pow_nonce.wrapping_add(1);
        prop_assert_ne!(renonced.hash(), header.hash());
    }

    #[test]
    fn header_json_round_trips(header in arb_header()) {
        let sealed = header.seal();
        let json = serde_json::to_string(&sealed).unwrap();
        let back: blyan_chain::SealedHeader = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, sealed);
    }

    #[test]
    fn block_round_trips(header in arb_header(), payload in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut header = header;
        header.payload_bytes = payload.len() as u64;
        let bytes = encode_block(&header, &payload);
        let decoded = decode_block(&bytes).unwrap();
        prop_assert_eq!(decoded.hash, header.hash());
        prop_assert_eq!(&decoded.header, &header);
        prop_assert_eq!(decoded.payload, &payload[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(header) = BlockHeader::decode(&bytes) {
            // Whatever decodes is canonical: it encodes back to the same bytes.
            prop_assert_eq!(header.encode(), bytes.clone());
        }
        let _ = decode_block(&bytes);
    }

    #[test]
    fn mutated_encodings_never_panic_and_stay_canonical(
        header in arb_header(),
        position in any::<prop::sample::Index>(),
        value in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let original = header.encode();
        let mut bytes = original.clone();
        let index = position.index(bytes.len());
        bytes[index] = value;
        if let Ok(decoded) = BlockHeader::decode(&bytes) {
            prop_assert_eq!(decoded.encode(), bytes.clone());
        }
        // A strict prefix of a canonical encoding never decodes.
        let cut = cut.index(original.len());
        prop_assert!(BlockHeader::decode(&original[..cut]).is_err());
        let block = encode_block(&header, &[]);
        let _ = decode_block(&block[..cut.min(block.len())]);
    }
}

/// Regression guard: the encoding and hash of a fixed header must never change silently, or
/// every stored block would stop verifying. Update only with a new HEADER_FORMAT_VERSION.
#[test]
fn golden_header_hash_is_pinned() {
    let key =
        AuthorKey::parse_hex("0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
            .unwrap();
    let mut header = BlockHeader {
        format_version: HEADER_FORMAT_VERSION,
        chain: ChainId::Parameters,
        height: 7,
        prev_hash: Some(BlockHash([0x11; 32])),
        depends_on: vec![BlockHash([0x22; 32])],
        kind: BlockKind::Expert,
        payload_hash: PayloadHash([0x33; 32]),
        payload_bytes: 1 << 20,
        timestamp_ms: 1_800_000_000_000,
        author: Address::ZERO,
        pow_nonce: 42,
        meta: BlockMeta {
            expert: Some(ExpertName::new(3, 5).unwrap()),
            layer: Some(3),
            version: 2,
            tensors: vec![TensorMeta {
                name: "w1".into(),
                dtype: Dtype::BF16,
                shape: vec![14336, 4096],
            }],
        },
        signature: None,
    };
    header.sign(&key);
    assert_eq!(header.encode().len(), GOLDEN_ENCODED_BYTES);
    assert_eq!(header.hash().to_string(), GOLDEN_HASH);
    assert_eq!(header.signature.unwrap().to_string(), GOLDEN_SIGNATURE);
}

/// 2 version + 1 chain + 8 height + 33 prev + 40 deps + 4 kind + 32 payload hash + 8 length
/// + 8 time + 20 author + 8 nonce + 61 meta (the tensor's dtype is one byte) + 66 signature.
const GOLDEN_ENCODED_BYTES: usize = 291;
const GOLDEN_HASH: &str = "0x80de5b1f6da9c71ea55ee7997f57f15b36bed02ac0faa0c6e372f941d0666d5e";
const GOLDEN_SIGNATURE: &str = "0x66ced943b67cb55feb635438f7c2c5b2064ee3a4eab926c5cf9ecb7c3d282c02\
                                0220373cf0cdf37123851af9460d5103b6acedb73fb63258e3deebbd09689af31c";

#[test]
fn header_size_limit_holds_at_the_bound_and_fails_one_past() {
    // A tensor name long enough (decoding does not judge names; validation does) to make the
    // encoding exactly BLOCK_HEADER_BYTES_MAX.
    let mut header = BlockHeader::new_child(
        &blyan_chain::ChainTip {
            chain: ChainId::Dataset,
            height: 0,
            hash: BlockHash::ZERO,
        },
        BlockKind::DatasetEntry,
        b"",
        0,
    );
    header.meta.tensors.push(TensorMeta {
        name: String::new(),
        dtype: Dtype::I8,
        shape: vec![],
    });
    let base = header.encode().len();
    header.meta.tensors[0].name = "x".repeat(BLOCK_HEADER_BYTES_MAX as usize - base);
    let at_bound = header.encode();
    assert_eq!(at_bound.len(), BLOCK_HEADER_BYTES_MAX as usize);
    assert_eq!(BlockHeader::decode(&at_bound).unwrap(), header);

    header.meta.tensors[0].name.push('x');
    let past = header.encode();
    assert!(matches!(
        BlockHeader::decode(&past),
        Err(blyan_chain::Error::LimitExceeded {
            what: "header bytes",
            ..
        })
    ));
}

#[test]
fn garbage_is_a_decode_error() {
    let mut bytes = vec![0xffu8; 100];
    bytes[..2].copy_from_slice(&HEADER_FORMAT_VERSION.to_le_bytes());
    assert!(matches!(
        BlockHeader::decode(&bytes),
        Err(blyan_chain::Error::Decode { .. })
    ));
    assert!(matches!(
        BlockHeader::decode(&[]),
        Err(blyan_chain::Error::Decode { .. })
    ));
}

/// Writes valid blocks as seeds for the `chain_decode` fuzz target, into the directory named by
/// `BLYAN_FUZZ_SEEDS_DIR` (`fuzz/corpus/chain_decode`). Each block is written in its wire form and
/// in the target's `header length (u16) ‖ header ‖ payload` form.
#[test]
#[ignore = "writes fuzz seeds; run by hand before fuzzing"]
fn write_fuzz_seeds() {
    let dir = std::path::PathBuf::from(
        std::env::var_os("BLYAN_FUZZ_SEEDS_DIR").expect("BLYAN_FUZZ_SEEDS_DIR names a directory"),
    );
    std::fs::create_dir_all(&dir).unwrap();
    let spec = blyan_chain::GenesisSpec::shipped();
    let key = AuthorKey::generate();
    let mut blocks: Vec<(BlockHeader, Vec<u8>)> = ChainId::ALL
        .iter()
        .map(|chain| {
            let block = spec.block(*chain);
            (block.header, block.payload)
        })
        .collect();
    let dataset_tip = blyan_chain::ChainTip {
        chain: ChainId::Dataset,
        height: 0,
        hash: spec.hashes()[2],
    };
    let mut entry = BlockHeader::new_child(&dataset_tip, BlockKind::DatasetEntry, b"entry", 1);
    entry.depends_on.push(spec.meta_genesis_hash());
    entry.sign(&key);
    blocks.push((entry, b"entry".to_vec()));
    let parameters_tip = blyan_chain::ChainTip {
        chain: ChainId::Parameters,
        height: 0,
        hash: spec.hashes()[1],
    };
    let mut expert = BlockHeader::new_child(&parameters_tip, BlockKind::Expert, b"weights", 2);
    expert.meta = BlockMeta {
        expert: Some(ExpertName::new(1, 2).unwrap()),
        layer: Some(1),
        version: 1,
        tensors: vec![TensorMeta {
            name: "w1".into(),
            dtype: Dtype::BF16,
            shape: vec![64, 32],
        }],
    };
    expert.sign(&key);
    blocks.push((expert, b"weights".to_vec()));
    for (index, (header, payload)) in blocks.iter().enumerate() {
        std::fs::write(
            dir.join(format!("wire-{index}")),
            encode_block(header, payload),
        )
        .unwrap();
        let header_bytes = header.encode();
        let mut split = (header_bytes.len() as u16).to_le_bytes().to_vec();
        split.extend_from_slice(&header_bytes);
        split.extend_from_slice(payload);
        std::fs::write(dir.join(format!("split-{index}")), split).unwrap();
    }
}
