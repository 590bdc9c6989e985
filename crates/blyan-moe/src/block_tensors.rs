//! A parameter block's header lists its payload's tensors (`BlockMeta::tensors`: name, dtype,
//! shape), so explorers and schedulers can size a block without reading it. Publishing writes
//! that list from the very layout it encoded; reading checks it against the layout it parsed,
//! and refuses a block whose header says otherwise ([`MoeError::HeaderTensorMismatch`]).

use blyan_chain::{BlockHash, TensorMeta};
use blyan_tensorblock::BlockLayout;

use crate::error::{MoeError, Result};

/// The header's list of a payload's tensors, in table order: each tensor's name, stored dtype
/// (`i8` for the codes of a quantized one) and shape.
pub(crate) fn tensor_metas(layout: &BlockLayout) -> Vec<TensorMeta> {
    layout
        .tensors()
        .iter()
        .map(|info| TensorMeta {
            name: info.name().to_owned(),
            dtype: info.dtype(),
            shape: info.shape().to_vec(),
        })
        .collect()
}

/// Checks that the header of `block` lists exactly the tensors its payload holds, in order.
pub(crate) fn check_header_tensors(
    block: BlockHash,
    header: &[TensorMeta],
    layout: &BlockLayout,
) -> Result<()> {
    let payload = tensor_metas(layout);
    let count = header.len().max(payload.len());
    for index in 0..count {
        let (listed, held) = (header.get(index), payload.get(index));
        if listed != held {
            return Err(MoeError::HeaderTensorMismatch {
                block,
                index: index as u64,
                header: listed.map(describe),
                payload: held.map(describe),
            });
        }
    }
    Ok(())
}

/// `name dtype [shape]`, as errors show a tensor.
fn describe(meta: &TensorMeta) -> String {
    format!("{} {} {:?}", meta.name, meta.dtype, meta.shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use blyan_tensorblock::{Dtype, TensorSpec};

    fn layout() -> BlockLayout {
        BlockLayout::plan(&[
            TensorSpec::new("w1", Dtype::F32, &[4, 2]),
            TensorSpec::int8_per_channel("w2", 2, 4),
        ])
        .expect("plannable")
    }

    #[test]
    fn the_written_list_passes_and_each_difference_is_named() {
        let layout = layout();
        let block = BlockHash([7; 32]);
        let metas = tensor_metas(&layout);
        assert_eq!(metas[1].dtype, Dtype::I8);
        check_header_tensors(block, &metas, &layout).expect("the list written from the layout");

        let mut wrong_shape = metas.clone();
        wrong_shape[0].shape = vec![2, 4];
        let mut wrong_dtype = metas.clone();
        wrong_dtype[1].dtype = Dtype::F32;
        let mut renamed = metas.clone();
        renamed[0].name = "w3".into();
        for (header, index) in [(wrong_shape, 0), (wrong_dtype, 1), (renamed, 0)] {
            match check_header_tensors(block, &header, &layout) {
                Err(MoeError::HeaderTensorMismatch {
                    block: named,
                    index: at,
                    header: Some(_),
                    payload: Some(_),
                }) => assert_eq!((named, at), (block, index)),
                other => panic!("expected a mismatch at {index}, got {other:?}"),
            }
        }
        // A list that is shorter, or longer, than the payload's table.
        match check_header_tensors(block, &metas[..1], &layout) {
            Err(MoeError::HeaderTensorMismatch {
                index: 1,
                header: None,
                payload: Some(payload),
                ..
            }) => assert!(payload.starts_with("w2 "), "{payload}"),
            other => panic!("expected a missing entry, got {other:?}"),
        }
        let mut longer = metas.clone();
        longer.push(metas[0].clone());
        assert!(matches!(
            check_header_tensors(block, &longer, &layout),
            Err(MoeError::HeaderTensorMismatch {
                index: 2,
                payload: None,
                ..
            })
        ));
    }
}
