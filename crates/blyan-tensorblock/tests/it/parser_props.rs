//! The parser never panics, and whatever it accepts is safe to view.

use blyan_tensorblock::{BlockLayout, MAGIC, TensorBlock};
use proptest::prelude::*;
use tch::Kind;

use crate::support;

/// Checks what a parsed layout promises, then views and reads every tensor.
fn check_accepted(bytes: &[u8]) {
    let Ok(layout) = BlockLayout::parse(bytes) else {
        return;
    };
    for tensor in layout.tensors() {
        for range in [Some(tensor.data()), tensor.scales()].into_iter().flatten() {
            assert!(range.end() <= bytes.len() as u64);
            assert!(range.offset >= layout.data_start() || range.bytes == 0);
            assert_eq!(range.offset % 64, 0);
        }
    }
    let block = TensorBlock::new(support::immutable(bytes.to_vec())).unwrap();
    for tensor in layout.tensors() {
        if let Ok(view) = block.tensor(tensor.name()) {
            // Reads every byte of the region through libtorch.
            let _ = view
                .to_kind(Kind::Double)
                .sum(Kind::Double)
                .double_value(&[]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check_accepted(&bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_magic_never_panic(
        tail in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&1u16.to_le_bytes());
        bytes.extend_from_slice(&tail);
        check_accepted(&bytes);
    }

    /// Corrupts a valid block at random places; whatever still parses is in bounds.
    #[test]
    fn corrupted_blocks_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = support::expert_block();
        for (index, value) in edits {
            let at = index.index(bytes.len());
            bytes[at] = value;
        }
        check_accepted(&bytes);
    }

    /// Sets a random 64-bit field of the header (offsets, lengths, dims) to a random value.
    #[test]
    fn corrupted_header_fields_never_panic(field in 0usize..52, value in any::<u64>()) {
        let mut bytes = support::expert_block();
        let at = (field * 8).min(bytes.len() - 8);
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
        check_accepted(&bytes);
    }
}
