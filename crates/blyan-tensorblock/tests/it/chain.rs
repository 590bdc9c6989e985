//! End to end: an expert appended to a real RocksDB chain store, viewed straight from
//! `chain.payload(hash)`: `expert tensor = view(chain.payload(hash))`.

use blyan_chain::{
    AuthorKey, BlockHash, BlockHeader, BlockKind, ChainId, ChainStore, ExpertName,
    GENESIS_TIMESTAMP_MS, PAYLOAD_ALIGN_BYTES, PayloadHandle, StoreConfig,
};
use blyan_tensorblock::{DATA_ALIGNMENT_BYTES, EncodeTensor, TensorBlock, encode_tensors_to_vec};
use tch::{Device, Kind, Tensor};

use crate::support;

// Tensors over a payload are aligned only if the chain aligns payloads at least as strictly.
const _: () = assert!(PAYLOAD_ALIGN_BYTES.is_multiple_of(DATA_ALIGNMENT_BYTES));

struct Expert {
    w1: Tensor,
    w2: Tensor,
    w3: Tensor,
}

impl Expert {
    /// A small SwiGLU expert: w1, w3 `[ffn, d]` f32 and bf16, w2 `[d, ffn]` stored INT8.
    fn new(seed: i64) -> Self {
        tch::manual_seed(seed);
        let options = (Kind::Float, Device::Cpu);
        Self {
            w1: Tensor::randn([96, 32], options),
            w2: Tensor::randn([32, 96], options),
            w3: Tensor::randn([96, 32], options).to_kind(Kind::BFloat16),
        }
    }

    fn encode(&self) -> Vec<u8> {
        encode_tensors_to_vec(&[
            EncodeTensor::as_is("w1", &self.w1),
            EncodeTensor::int8("w2", &self.w2),
            EncodeTensor::as_is("w3", &self.w3),
        ])
        .unwrap()
    }
}

fn append_expert(
    store: &ChainStore,
    key: &AuthorKey,
    name: ExpertName,
    payload: &[u8],
) -> BlockHash {
    let tip = store.tip(ChainId::Parameters);
    let mut header = BlockHeader::new_child(
        &tip,
        BlockKind::Expert,
        payload,
        GENESIS_TIMESTAMP_MS + 1_000,
    );
    header.meta.expert = Some(name);
    header.meta.version = 1;
    header.sign(key);
    store.append(&header, payload).unwrap()
}

fn view(handle: PayloadHandle) -> TensorBlock<PayloadHandle> {
    TensorBlock::new(handle).unwrap()
}

#[test]
fn expert_tensors_are_views_of_the_chain_payload() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChainStore::open(dir.path(), StoreConfig::default()).unwrap();
    let key = AuthorKey::generate();
    let expert = Expert::new(11);
    let name = ExpertName::new(3, 7).unwrap();
    let hash = append_expert(&store, &key, name, &expert.encode());

    let block = view(
        store
            .payload(&hash)
            .unwrap()
            .expect("the block was appended"),
    );
    let base = block.bytes().as_ptr() as usize;
    assert_eq!(base % DATA_ALIGNMENT_BYTES as usize, 0);
    for tensor_name in ["w1", "w2", "w3"] {
        let tensor = block.tensor(tensor_name).unwrap();
        let info = block.layout().require(tensor_name).unwrap();
        // The tensor's data is the payload's bytes, where the header says, in a read-only
        // mapping of the chain's segment file.
        assert_eq!(
            tensor.data_ptr() as usize,
            base + info.data().offset as usize
        );
        let permissions = support::mapping_permissions(tensor.data_ptr() as usize);
        assert!(
            permissions.starts_with("r-"),
            "{tensor_name}: {permissions}"
        );
    }
    assert!(block.tensor("w1").unwrap().equal(&expert.w1));
    assert!(block.tensor("w3").unwrap().equal(&expert.w3));
    let w2 = block.int8("w2").unwrap();
    let x = Tensor::randn([4, 96], (Kind::Float, Device::Cpu));
    let exact = x.matmul(&expert.w2.tr());
    let error =
        (w2.linear(&x).unwrap() - &exact).norm().double_value(&[]) / exact.norm().double_value(&[]);
    assert!(error < 0.01, "INT8 relative error {error}");

    // The store can close: the handle inside each tensor keeps the segment mapped.
    let w1 = block.tensor("w1").unwrap();
    drop(block);
    drop(store);
    assert!(w1.equal(&expert.w1));
}

#[test]
fn a_reopened_store_serves_the_same_expert() {
    let dir = tempfile::tempdir().unwrap();
    let key = AuthorKey::generate();
    let experts = [Expert::new(21), Expert::new(22)];
    let hashes: Vec<BlockHash> = {
        let store = ChainStore::open(dir.path(), StoreConfig::default()).unwrap();
        (0u32..)
            .zip(&experts)
            .map(|(index, expert)| {
                let name = ExpertName::new(0, index).unwrap();
                append_expert(&store, &key, name, &expert.encode())
            })
            .collect()
    };
    let store = ChainStore::open(dir.path(), StoreConfig::default()).unwrap();
    for (hash, expert) in hashes.iter().zip(&experts) {
        let block = view(store.payload_verified(hash).unwrap().unwrap());
        assert!(block.tensor("w1").unwrap().equal(&expert.w1));
        assert!(block.tensor("w3").unwrap().equal(&expert.w3));
        let w2 = block.load_f32("w2").unwrap();
        let difference = (&w2 - &expert.w2).abs().max().double_value(&[]);
        let step = expert.w2.abs().max().double_value(&[]) / 127.0;
        assert!(difference <= step / 2.0 * 1.0001, "{difference} vs {step}");
    }
}

#[test]
fn a_non_tensor_payload_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChainStore::open(dir.path(), StoreConfig::default()).unwrap();
    let key = AuthorKey::generate();
    let hash = append_expert(
        &store,
        &key,
        ExpertName::new(1, 1).unwrap(),
        b"not a tensor block",
    );
    let result = TensorBlock::new(store.payload(&hash).unwrap().unwrap());
    assert!(
        matches!(result, Err(blyan_tensorblock::Error::Truncated { .. })),
        "{result:?}"
    );
}
