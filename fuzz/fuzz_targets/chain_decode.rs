//! Fuzzes block decoding and stateless validation: any bytes either fail with a typed error that
//! blames the block, or decode to a header whose canonical encoding is exactly those bytes, whose
//! hash is the one claimed, and which validation judges without panicking.
#![no_main]

use std::sync::OnceLock;

use blyan_chain::{
    BLOCK_PREFIX_BYTES, BlockHeader, GenesisSpec, StoreConfig, Validator, decode_block,
    encode_block,
};
use libfuzzer_sys::fuzz_target;

fn validator() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        Validator::new(StoreConfig::default(), &GenesisSpec::shipped())
            .expect("the default config is within its limits")
    })
}

fuzz_target!(|data: &[u8]| {
    check_header(data);
    check_block(data);
    // Random bytes almost never carry the right hash in front of their header; also read the
    // input as `header length (u16) ‖ header ‖ payload` and put the true hash in front, so the
    // fuzzer spends its time in the header and the validation rules.
    if let [low, high, rest @ ..] = data {
        let split = usize::from(u16::from_le_bytes([*low, *high])).min(rest.len());
        let (header_bytes, payload) = rest.split_at(split);
        if let Ok(header) = BlockHeader::decode(header_bytes) {
            let mut wire = Vec::with_capacity(BLOCK_PREFIX_BYTES + rest.len());
            wire.extend_from_slice(header.hash().as_bytes());
            wire.extend_from_slice(&(header_bytes.len() as u32).to_le_bytes());
            wire.extend_from_slice(header_bytes);
            wire.extend_from_slice(payload);
            check_block(&wire);
        }
    }
});

fn check_header(bytes: &[u8]) {
    match BlockHeader::decode(bytes) {
        Ok(header) => {
            assert_eq!(header.encode(), bytes, "a decoded header is canonical");
            if let Ok(hash) = validator().check_header(&header) {
                assert_eq!(hash, header.hash());
            }
        }
        Err(error) => assert!(error.is_invalid_block(), "{error}"),
    }
}

fn check_block(bytes: &[u8]) {
    match decode_block(bytes) {
        Ok(block) => {
            assert_eq!(block.hash, block.header.hash());
            assert_eq!(block.payload.len() as u64, block.header.payload_bytes);
            assert_eq!(encode_block(&block.header, block.payload), bytes);
            match validator().check_header(&block.header) {
                Ok(hash) => {
                    assert_eq!(hash, block.hash);
                    if let Err(error) =
                        validator().check_payload(hash, &block.header, block.payload)
                    {
                        assert!(error.is_invalid_block(), "{error}");
                        assert_eq!(error.block(), Some(hash));
                    }
                }
                Err(error) => assert!(error.is_invalid_block(), "{error}"),
            }
        }
        Err(error) => assert!(error.is_invalid_block(), "{error}"),
    }
}
