//! Fuzzes the tensor-block parser: any bytes either fail with a typed error or give a layout
//! whose every region lies inside the bytes, and re-encoding that block canonically gives back
//! the same tensors.
#![no_main]

use blyan_tensorblock::{BlockRef, BlockWriter, PREAMBLE_BYTES, TensorSpec};
use libfuzzer_sys::fuzz_target;

/// Where the preamble stores the payload length (docs/tensorblock-format.md).
const PAYLOAD_BYTES_FIELD: usize = 24;

fuzz_target!(|data: &[u8]| {
    check(data);
    // Nearly every random input dies on the payload length; also try it with that field made
    // true, so the fuzzer spends its time in the table, the names and the regions.
    if data.len() >= PREAMBLE_BYTES as usize {
        let mut fixed = data.to_vec();
        fixed[PAYLOAD_BYTES_FIELD..PAYLOAD_BYTES_FIELD + 8]
            .copy_from_slice(&(data.len() as u64).to_le_bytes());
        check(&fixed);
    }
});

fn check(data: &[u8]) {
    let Ok(block) = BlockRef::parse(data) else {
        return;
    };
    let layout = block.layout();
    assert_eq!(layout.payload_bytes(), data.len() as u64);
    let specs: Vec<TensorSpec> = layout.tensors().iter().map(|tensor| tensor.spec()).collect();
    let mut writer = BlockWriter::new(Vec::new(), &specs).expect("a parsed layout can be planned");
    for tensor in layout.tensors() {
        assert!(tensor.data().end() <= data.len() as u64);
        assert!(tensor.data().offset >= layout.data_start());
        assert_eq!(tensor.data().offset % 64, 0);
        let bytes = block.data(tensor.name()).expect("a parsed tensor has its data");
        assert_eq!(bytes.len() as u64, tensor.data().bytes);
        writer.write_data(bytes).expect("data of the planned length");
        if tensor.scales().is_some() {
            let scales = block.scales(tensor.name()).expect("a quantized tensor has scales");
            assert!(scales.iter().all(|scale| scale.is_finite() && *scale >= 0.0));
            if !scales.is_empty() {
                writer.write_scales(&scales).expect("scales of the planned count");
            }
        }
    }
    let canonical = writer.finish().expect("every tensor written");
    let reparsed = BlockRef::parse(&canonical).expect("a canonical block parses");
    assert_eq!(reparsed.layout().tensors().len(), layout.tensors().len());
    for tensor in layout.tensors() {
        let again = reparsed.layout().get(tensor.name()).expect("same names");
        assert_eq!(again.spec(), tensor.spec());
        assert_eq!(reparsed.data(tensor.name()).ok(), block.data(tensor.name()).ok());
        if tensor.scales().is_some() {
            assert_eq!(reparsed.scales(tensor.name()).ok(), block.scales(tensor.name()).ok());
        }
    }
}
